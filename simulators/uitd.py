"""A simulated UITD (用户信息传输装置): a building fire panel's link to the centre,
speaking GB/T 26875.3 over real TCP.

It sends data units and waits for the centre's confirm, retransmitting the same
frame (same serial number) when none comes, as the standard asks (timeout at
most 10 s, 3 retries). It answers the centre's clock syncs (type 90) and duty
checks (type 91, answered with the duty key: a type 24 record with bit 5).
``INCIDENTS`` are the panel incidents the simulator plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from core.gbt26875 import Command, Frame, FrameError, StreamDecoder, TimeLabel, encode_frame
from core.gbt26875_units import (
    ClockSync,
    ComponentStatus,
    DataObject,
    DutyCheck,
    SystemStatus,
    UitdOperation,
    UitdStatus,
    decode_unit,
    encode_unit,
)

__all__ = ["INCIDENTS", "Detector", "SimulatedUitd", "play_incident"]

_LOG = logging.getLogger(__name__)
SHANGHAI = ZoneInfo("Asia/Shanghai")
# The standard's recommendation: at most 10 s for a confirm, 3 retries.
CONFIRM_TIMEOUT_S = 10.0
RETRIES = 3
NORMAL = 0x0001
FIRE = 0x0002
FAULT = 0x0004
MAIN_POWER_FAULT = 0x0100  # system status bit 8


@dataclass(frozen=True, slots=True)
class Detector:
    system_type: int = 1  # fire alarm system
    system_address: int = 1
    component_type: int = 42  # photoelectric smoke detector
    zone: int = 1
    position: int = 1
    description: str = ""

    @property
    def address(self) -> int:
        return self.zone | self.position << 16


@dataclass(slots=True)
class SimulatedUitd:
    host: str
    port: int
    address: bytes
    centre: bytes = bytes(6)
    zone: tzinfo = SHANGHAI
    clock_offset: timedelta = timedelta(0)
    confirm_timeout_s: float = CONFIRM_TIMEOUT_S
    retries: int = RETRIES
    answer_duty_checks: bool = True
    # What happened, for tests and the CLI's report.
    confirmed: list[int] = field(default_factory=list)
    denied: list[int] = field(default_factory=list)
    sent: int = 0
    clock_syncs: int = 0
    duty_checks: int = 0
    _serial: int = 0
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _answers: dict[int, asyncio.Future[int]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._task = asyncio.create_task(self._read(), name=f"uitd-{self.address.hex()}")

    async def close(self) -> None:
        """Hang up (a link cut, seen from the centre)."""
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._writer = None

    def now(self) -> datetime:
        return (datetime.now(UTC) + self.clock_offset).astimezone(self.zone)

    def label(self, when: datetime | None = None) -> TimeLabel:
        return TimeLabel.of((when or self.now()).astimezone(self.zone))

    def frame(self, command: Command, adu: bytes = b"", serial: int | None = None) -> Frame:
        if serial is None:
            self._serial = (self._serial + 1) & 0xFFFF
            serial = self._serial
        return Frame(serial, (1, 0), self.label(), self.address, self.centre, command, adu)

    async def send(self, frame: Frame, *, retries: int | None = None) -> int | None:
        """Send until the centre answers; its command (3 confirm, 6 deny), or None."""
        assert self._writer is not None, "connect() first"
        loop = asyncio.get_running_loop()
        for _ in range(1 + (self.retries if retries is None else retries)):
            future: asyncio.Future[int] = loop.create_future()
            self._answers[frame.serial] = future
            self._writer.write(encode_frame(frame))
            await self._writer.drain()
            self.sent += 1
            try:
                answer = await asyncio.wait_for(future, self.confirm_timeout_s)
            except TimeoutError:
                continue
            except ConnectionError:
                return None  # the link is gone: no answer will come on it
            finally:
                self._answers.pop(frame.serial, None)
            (self.confirmed if answer == Command.CONFIRM else self.denied).append(frame.serial)
            return answer
        return None

    async def send_unit(self, objects: Sequence[DataObject]) -> int | None:
        return await self.send(self.frame(Command.SEND, encode_unit(objects)))

    async def heartbeat(self) -> int | None:
        return await self.send(self.frame(Command.SEND), retries=0)

    def component(self, detector: Detector, status: int) -> ComponentStatus:
        return ComponentStatus(
            detector.system_type,
            detector.system_address,
            detector.component_type,
            detector.address,
            status,
            detector.description,
            self.label(),
        )

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._receive()
        for future in self._answers.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed"))

    async def _receive(self) -> None:
        assert self._reader is not None
        decoder = StreamDecoder()
        while True:
            data = await self._reader.read(4096)
            if not data:
                return
            for item in decoder.feed(data):
                if isinstance(item, FrameError):
                    _LOG.warning("simulated UITD got a bad frame: %s", item)
                elif item.command in (Command.CONFIRM, Command.DENY):
                    future = self._answers.get(item.serial)
                    if future is not None and not future.done():
                        future.set_result(item.command)
                elif item.command == Command.CONTROL:
                    await self._control(item)

    async def _control(self, frame: Frame) -> None:
        assert self._writer is not None
        unit = decode_unit(frame.adu)
        objects = getattr(unit, "objects", ())
        answer = Command.CONFIRM if objects else Command.DENY
        self._writer.write(encode_frame(self.frame(answer, serial=frame.serial)))
        await self._writer.drain()
        for obj in objects:
            if isinstance(obj, ClockSync):
                self.clock_syncs += 1
                target = obj.time.to_datetime(self.zone)
                self.clock_offset = target - datetime.now(UTC)
            elif isinstance(obj, DutyCheck):
                self.duty_checks += 1
                if self.answer_duty_checks:
                    asyncio.get_running_loop().create_task(
                        self.send_unit([UitdOperation(0x20, 1, self.label())])
                    )


# -- incidents ------------------------------------------------------------------------

SMOKE_1 = Detector(zone=1, position=1, description="1F lobby smoke")
SMOKE_2 = Detector(zone=1, position=2, description="1F corridor smoke")


async def _fire(uitd: SimulatedUitd) -> list[int | None]:
    return [await uitd.send_unit([uitd.component(SMOKE_1, NORMAL | FIRE)])]


async def _second(uitd: SimulatedUitd) -> list[int | None]:
    return [await uitd.send_unit([uitd.component(SMOKE_2, NORMAL | FIRE)])]


async def _fault(uitd: SimulatedUitd) -> list[int | None]:
    return [await uitd.send_unit([uitd.component(SMOKE_1, NORMAL | FAULT)])]


async def _main_power(uitd: SimulatedUitd) -> list[int | None]:
    return [
        await uitd.send_unit([SystemStatus(1, 1, NORMAL | MAIN_POWER_FAULT, uitd.label())]),
        await uitd.send_unit([UitdStatus(NORMAL | 0x08, uitd.label())]),
    ]


async def _link_cut(uitd: SimulatedUitd) -> list[int | None]:
    await uitd.close()
    return []


INCIDENTS: dict[str, Callable[[SimulatedUitd], Awaitable[list[int | None]]]] = {
    "fire": _fire,
    "second_detector": _second,
    "fault": _fault,
    "main_power": _main_power,
    "link_cut": _link_cut,
}


async def play_incident(uitd: SimulatedUitd, name: str) -> list[int | None]:
    """Play one incident; the centre's answer to each frame (None: none came)."""
    return await INCIDENTS[name](uitd)
