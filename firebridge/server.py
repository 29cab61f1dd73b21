"""``smartcommunity fire-bridge``: the asyncio TCP server that UITDs connect to.

Per connection, frames are handled in order: decode, find the UITD by its
address, turn the data unit into canonical messages, publish them (QoS 1), wait
until the pipeline has committed them, remember the status words, and only then
confirm (command 3). A frame the platform refuses is a dead letter with its raw
bytes and is denied (command 6). A frame that cannot be committed in time gets
no answer at all: the UITD retransmits it, and the natural keys make the second
copy harmless. A frame already confirmed and sent again (our confirm was lost)
is confirmed at once.

A sweeper task raises ``link_lost`` for a UITD silent past its heartbeat
interval, sends duty checks (type 91) on schedule and records those unanswered
in time. A UITD whose clock is off gets a clock sync (type 90).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from core.decode import Limits
from core.errors import RejectReason, ServiceUnavailable
from core.gbt26875 import (
    Command,
    Frame,
    FrameError,
    FrameFault,
    StreamDecoder,
    TimeLabel,
    encode_frame,
    format_address,
    parse_address,
)
from core.gbt26875_units import (
    ClockSync,
    DataUnit,
    DutyCheck,
    UnitError,
    Unsupported,
    decode_unit,
    encode_unit,
)
from core.settings import FireBridgeSettings
from core.topics import device_topic
from firebridge.commits import CommitWatcher
from firebridge.mapping import DEVICE_CLASS, Point, Uitd, point_specs, translate
from firebridge.publisher import CanonicalPublisher
from firebridge.store import BridgeStore, DeadFrame

__all__ = ["FireBridge"]

_LOG = logging.getLogger(__name__)
_READ_SIZE = 4096
# Recently confirmed frames per connection: a retransmission of one of them (our
# confirm was lost) is confirmed again without being handled twice.
_CONFIRMED_KEPT = 256
# How often the sweeper looks at links and duty checks.
SWEEP_S = 0.5
# A UITD unknown to the registry is looked up again at most this often, a known one
# this often (a decommissioning or a changed heartbeat reaches the bridge in that time).
_MISS_REFRESH_S = 2.0
_REFRESH_S = 30.0
# After points were provisioned, the pipeline's registry and the rule engine's
# directory must see the new devices before their messages arrive (they re-read at
# most every 1 s and 2 s on a miss).
PROVISION_SETTLE_S = 2.2
# Broken frames stored as dead letters per connection at once; then one a second.
DEAD_LETTER_BURST = 50


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Link:
    """What the bridge knows of one UITD's connection, across reconnects."""

    uitd: Uitd
    last_frame: float
    session: Session | None = None
    lost: bool = False
    last_sync: float = float("-inf")
    next_duty: float = 0.0
    duty: tuple[int, float] | None = None  # open duty check: (command id, sent, monotonic)


@dataclass(slots=True)
class _Downstream:
    command_id: int
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


class Session:
    """One TCP connection."""

    def __init__(
        self, bridge: FireBridge, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.bridge = bridge
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.decoder = StreamDecoder()
        self.confirmed: OrderedDict[bytes, None] = OrderedDict()
        self.points: dict[str, dict[str, Point]] = {}
        self.downstream: dict[int, _Downstream] = {}
        self._serial = 0
        self.closed = False
        self.identified = False  # a registered UITD has spoken on this connection
        # Dead letters for broken frames: a bucket of DEAD_LETTER_BURST, refilled at
        # one a second, so that a stream of noise cannot flood the database.
        self._budget = float(DEAD_LETTER_BURST)
        self._budget_at = time.monotonic()

    def may_dead_letter(self) -> bool:
        now = time.monotonic()
        self._budget = min(DEAD_LETTER_BURST, self._budget + (now - self._budget_at))
        self._budget_at = now
        if self._budget < 1:
            return False
        self._budget -= 1
        return True

    def next_serial(self) -> int:
        self._serial = (self._serial + 1) & 0xFFFF
        return self._serial

    def send(self, frame: Frame) -> None:
        if not self.closed:
            self.writer.write(encode_frame(frame))

    def reply(self, to: Frame, command: Command, zone: Any = UTC) -> None:
        self.send(
            Frame(
                to.serial,
                to.version,
                TimeLabel.of(_now().astimezone(zone)),
                self.bridge.address,
                to.source,
                command,
            )
        )
        self.bridge.counters["confirmed" if command == Command.CONFIRM else "denied"] += 1

    async def run(self) -> None:
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    break
                for item in self.decoder.feed(data):
                    if isinstance(item, FrameError):
                        await self.bridge.frame_error(self, item)
                    else:
                        await self.bridge.handle(self, item)
                await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed = True
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()


class FireBridge:
    def __init__(
        self,
        *,
        settings: FireBridgeSettings,
        limits: Limits,
        store: BridgeStore,
        publisher: CanonicalPublisher,
        watcher: CommitWatcher,
        provision_settle_s: float = PROVISION_SETTLE_S,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.store = store
        self.publisher = publisher
        self.watcher = watcher
        self.address = parse_address(settings.address)
        self.provision_settle_s = provision_settle_s
        self.counters: Counter[str] = Counter()
        self.links: dict[str, Link] = {}
        self._uitds: dict[bytes, tuple[Uitd | None, float]] = {}
        self.sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port: int | None = None

    # -- serving ---------------------------------------------------------------------

    async def serve(self, *, started: asyncio.Event | None = None) -> None:
        """Serve until cancelled."""
        server = await asyncio.start_server(
            self._connection, self.settings.host, self.settings.port, limit=_READ_SIZE * 4
        )
        self.port = server.sockets[0].getsockname()[1]
        _LOG.info("fire bridge listening on %s:%s", self.settings.host, self.port)
        try:
            async with server, asyncio.TaskGroup() as tasks:
                tasks.create_task(self.watcher.run(), name="commit-watcher")
                tasks.create_task(self._sweeper(), name="link-sweeper")
                if started is not None:
                    started.set()
                await server.serve_forever()
        finally:
            # The server stops listening; connections still open end with it: closed
            # sockets end their reads, and only a straggler is cancelled.
            for session in list(self.sessions):
                session.closed = True
                session.writer.close()
            connections = list(self._tasks)
            if connections:
                _, late = await asyncio.wait(connections, timeout=5)
                for task in late:
                    task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self.sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.counters["connections"] += 1
        try:
            await session.run()
        except Exception:  # noqa: BLE001 - the connection's boundary: one UITD must not end the server
            _LOG.exception("connection %s failed", session.peer)
        finally:
            self.sessions.discard(session)
            for link in self.links.values():
                if link.session is session:
                    link.session = None

    # -- frames ----------------------------------------------------------------------

    async def frame_error(self, session: Session, error: FrameError) -> None:
        self.counters[f"frame_{error.fault.value}"] += 1
        if error.fault is FrameFault.GARBAGE:
            return  # skipped bytes between frames; counted, not stored
        if not session.may_dead_letter():
            self.counters["dead_letters_dropped"] += 1
            if not session.identified:
                # Noise from a peer that never sent one valid frame: not a UITD.
                session.writer.close()
            return
        topic = f"gb26875/{session.peer}"
        await self._dead(topic, error.raw, error.fault.value, error.detail)
        header = error.header
        if header is not None and error.fault is FrameFault.BAD_CHECKSUM:
            session.reply(header, Command.DENY)

    async def handle(self, session: Session, frame: Frame) -> None:
        self.counters["frames"] += 1
        raw = encode_frame(frame)
        try:
            await self._handle(session, frame, raw)
        except ServiceUnavailable as exc:
            # No answer: the UITD retransmits, by when the service may be back.
            self.counters["unavailable"] += 1
            _LOG.warning("frame %s from %s not handled: %s", frame.serial, session.peer, exc)
        except Exception as exc:  # noqa: BLE001 - the frame's boundary: the connection lives on
            self.counters["internal_error"] += 1
            _LOG.exception("frame %s from %s failed", frame.serial, session.peer)
            with contextlib.suppress(ServiceUnavailable):
                await self._dead(
                    f"gb26875/{session.peer}",
                    raw,
                    RejectReason.INTERNAL_ERROR.value,
                    f"{type(exc).__name__}: {exc}",
                )

    async def _handle(self, session: Session, frame: Frame, raw: bytes) -> None:
        uitd = await self._uitd(frame.source)
        if uitd is None or uitd.state == "decommissioned":
            reason = (
                RejectReason.UNKNOWN_DEVICE if uitd is None else RejectReason.DEVICE_DECOMMISSIONED
            )
            if not session.may_dead_letter():  # an unknown peer repeating itself
                self.counters["dead_letters_dropped"] += 1
                session.writer.close()
                return
            await self._dead(
                f"gb26875/{format_address(frame.source)}",
                raw,
                reason.value,
                f"UITD address {format_address(frame.source)} is not registered"
                if uitd is None
                else f"UITD {uitd.device_id} is decommissioned",
            )
            session.reply(frame, Command.DENY)
            return
        session.identified = True
        link = await self._alive(uitd, session)
        # Not a device topic (no such channel): the dead letter's home, listed by device.
        topic = f"community/{uitd.community_id}/{DEVICE_CLASS}/{uitd.device_id}/gb26875"
        if frame.command == Command.CONFIRM or frame.command == Command.DENY:
            await self._answered(session, frame)
            return
        if frame.command != Command.SEND:
            self.counters["unexpected_command"] += 1
            await self._dead(topic, raw, RejectReason.BAD_PAYLOAD.value, f"command {frame.command}")
            session.reply(frame, Command.DENY, uitd.zone)
            return
        await self._check_clock(session, link, frame.time)
        if not frame.adu:  # a heartbeat
            self.counters["heartbeats"] += 1
            session.reply(frame, Command.CONFIRM, uitd.zone)
            return
        if raw in session.confirmed:
            self.counters["duplicates"] += 1
            session.reply(frame, Command.CONFIRM, uitd.zone)
            return
        try:
            unit = decode_unit(frame.adu)
        except UnitError as exc:
            await self._dead(topic, raw, RejectReason.BAD_PAYLOAD.value, str(exc))
            session.reply(frame, Command.DENY, uitd.zone)
            return
        if isinstance(unit, Unsupported):
            # Well formed but not interpreted (versions, configurations): kept, not denied,
            # or the UITD would send it three times over for nothing.
            await self._dead(
                topic, raw, "unsupported_data_unit", f"type {unit.type_flag} is not interpreted"
            )
            session.reply(frame, Command.CONFIRM, uitd.zone)
            return
        answer = await self._commit(session, uitd, unit, frame, raw, topic)
        if answer is None:
            return
        if answer == Command.DENY:
            session.reply(frame, Command.DENY, uitd.zone)
            return
        session.confirmed[raw] = None
        if len(session.confirmed) > _CONFIRMED_KEPT:
            session.confirmed.popitem(last=False)
        session.reply(frame, Command.CONFIRM, uitd.zone)

    async def _commit(
        self, session: Session, uitd: Uitd, unit: DataUnit, frame: Frame, raw: bytes, topic: str
    ) -> Command | None:
        """Publish what the unit carries and wait for its commit: CONFIRM when it is
        committed, DENY when every object was refused, None (no answer) otherwise."""
        received_at = _now()
        points = await self._points(session, uitd, unit)
        result = translate(unit, uitd, points, received_at, self.limits)
        for reason, detail in result.refusals:
            await self._dead(topic, raw, reason.value, detail)
        if result.refusals and not (result.messages or result.states or result.uitd_clock):
            return Command.DENY
        futures = [self.publisher.publish(m.topic, m.payload) for m in result.messages]
        keys = [k for m in result.messages for k in m.keys]
        timeout = self.settings.commit_timeout_s
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except (TimeoutError, ServiceUnavailable) as exc:
            self.counters["publish_failed"] += 1
            _LOG.warning("frame %s of %s not published: %r", frame.serial, uitd.device_id, exc)
            return None
        if not await self.watcher.wait(keys, timeout):
            self.counters["commit_timeout"] += 1
            _LOG.warning(
                "frame %s of %s not committed in %.0fs", frame.serial, uitd.device_id, timeout
            )
            return None
        self.counters["messages"] += len(result.messages)
        await self.store.save_states(uitd.device_id, result.states)
        cache = session.points.get(uitd.device_id, {})
        for key, word, _ts in result.states:
            if key in cache:
                cache[key].status = word
        link = self.links[uitd.device_id]
        if result.duty_answered is not None and link.duty is not None:
            await self.store.command_outcome(link.duty[0], "answered", result.duty_answered)
            link.duty = None
        if result.uitd_clock is not None:
            await self._check_clock(
                session, link, TimeLabel.of(result.uitd_clock.astimezone(uitd.zone))
            )
        return Command.CONFIRM

    async def _points(
        self, session: Session, uitd: Uitd, unit: DataUnit
    ) -> dict[str, Point | None]:
        cache = session.points.get(uitd.device_id)
        if cache is None:
            cache = session.points[uitd.device_id] = await self.store.points(uitd.device_id)
        specs = point_specs(unit)
        missing = [s for s in specs if s.key not in cache]
        if missing:
            cache.update(await self.store.points(uitd.device_id))
            missing = [s for s in specs if s.key not in cache]
        if missing and uitd.auto_provision:
            await self.store.provision(uitd, [s for s in missing if s.key])
            cache.update(await self.store.points(uitd.device_id))
            self.counters["provisioned"] += len(missing)
            await asyncio.sleep(self.provision_settle_s)
        return {s.key: cache.get(s.key) for s in specs}

    async def _uitd(self, address: bytes) -> Uitd | None:
        known = self._uitds.get(address)
        now = time.monotonic()
        if known is not None and now - known[1] < (
            _REFRESH_S if known[0] is not None else _MISS_REFRESH_S
        ):
            return known[0]
        uitd = await self.store.uitd(address)
        self._uitds[address] = (uitd, now)
        return uitd

    # -- links -----------------------------------------------------------------------

    async def _alive(self, uitd: Uitd, session: Session) -> Link:
        now = time.monotonic()
        link = self.links.get(uitd.device_id)
        if link is None:
            link = self.links[uitd.device_id] = Link(uitd, now)
            link.next_duty = now + self.settings.duty_check_every_s
            await self._status(uitd, online=True)
        link.uitd = uitd  # the registry's latest word on it
        link.last_frame = now
        link.session = session
        if link.lost:
            # Published first: if the broker is away, the next frame tries again.
            await self._news(uitd, "link_restored", {"peer": session.peer})
            link.lost = False
            self.counters["links_restored"] += 1
            await self._status(uitd, online=True)
        return link

    async def _news(self, uitd: Uitd, event: str, data: dict[str, Any]) -> None:
        """An event of the bridge's own about a UITD (its link, duty check, clock)."""
        body = {"ts": _now().isoformat(), "event": event, "data": {"source": "fire-bridge", **data}}
        topic = device_topic(uitd.community_id, DEVICE_CLASS, uitd.device_id, "event")
        await self.publisher.publish(topic, orjson.dumps(body))

    async def _status(self, uitd: Uitd, *, online: bool) -> None:
        topic = device_topic(uitd.community_id, DEVICE_CLASS, uitd.device_id, "status")
        # Offline goes out as a "clean" goodbye: the board shows the UITD offline, and
        # the alert is fire.uitd_link_lost alone, not also the generic device.offline
        # that a lost MQTT link (a Will) raises.
        body = {"online": True} if online else {"online": False, "clean": True}
        try:
            await self.publisher.publish(topic, orjson.dumps(body))
        except ServiceUnavailable as exc:
            _LOG.warning("status of %s not published: %s", uitd.device_id, exc)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            for link in list(self.links.values()):
                try:
                    await self._sweep(link)
                except ServiceUnavailable as exc:
                    _LOG.warning("sweep of %s postponed: %s", link.uitd.device_id, exc)
                except Exception:  # noqa: BLE001 - the task's boundary: the sweeper must go on
                    _LOG.exception("sweep of %s failed", link.uitd.device_id)

    async def _sweep(self, link: Link) -> None:
        now = time.monotonic()
        uitd = link.uitd
        if not link.lost and now - link.last_frame > uitd.heartbeat_s:
            silent = now - link.last_frame
            await self._news(uitd, "link_lost", {"silent_s": round(silent, 1)})
            await self._status(uitd, online=False)
            link.lost = True
            self.counters["links_lost"] += 1
            if link.session is not None:  # a half-open socket: make the UITD reconnect
                link.session.writer.close()
        if link.duty is not None and now - link.duty[1] > self.settings.duty_answer_s:
            command_id = link.duty[0]
            await self._news(uitd, "duty_check_missed", {"command_id": command_id})
            await self.store.command_outcome(command_id, "missed", _now())
            link.duty = None
            self.counters["duty_missed"] += 1
        every = self.settings.duty_check_every_s
        session = link.session
        if (
            every > 0
            and now >= link.next_duty
            and link.duty is None  # one prompt at a time: the UITD shows one
            and session is not None
            and not link.lost
        ):
            link.next_duty = now + every
            minutes = max(1, min(255, round(self.settings.duty_answer_s / 60)))
            command_id = await self._downstream(
                session, uitd, DutyCheck(minutes), "duty_check", {"answer_minutes": minutes}
            )
            link.duty = (command_id, now)
            self.counters["duty_checks"] += 1

    # -- downstream ----------------------------------------------------------------------

    async def _downstream(
        self,
        session: Session,
        uitd: Uitd,
        unit: ClockSync | DutyCheck,
        kind: str,
        detail: dict[str, Any],
    ) -> int:
        serial = session.next_serial()
        sent_at = _now()
        command_id = await self.store.command_sent(uitd, kind, serial, sent_at, detail)
        session.downstream[serial] = _Downstream(command_id, kind, detail)
        session.send(
            Frame(
                serial,
                (1, 0),
                TimeLabel.of(sent_at.astimezone(uitd.zone)),
                self.address,
                uitd.address,
                Command.CONTROL,
                encode_unit([unit]),
            )
        )
        return command_id

    async def _answered(self, session: Session, frame: Frame) -> None:
        """The UITD's confirm or deny of a command of ours."""
        pending = session.downstream.pop(frame.serial, None)
        if pending is None:
            self.counters["unmatched_answers"] += 1
            return
        confirmed = frame.command == Command.CONFIRM
        await self.store.command_outcome(
            pending.command_id, "confirmed" if confirmed else "denied", _now()
        )
        if confirmed and pending.kind == "clock_sync":
            uitd = await self._uitd(frame.source)
            if uitd is not None:
                await self._news(uitd, "clock_synced", pending.detail)

    async def _check_clock(self, session: Session, link: Link, label: TimeLabel) -> None:
        try:
            device_time = label.to_datetime(link.uitd.zone)
        except ValueError:
            return  # an impossible time label is no clock reading
        skew = (device_time - _now()).total_seconds()
        if abs(skew) <= self.settings.clock_skew_s:
            return
        now = time.monotonic()
        if now - link.last_sync < self.settings.clock_sync_every_s:
            return
        link.last_sync = now
        self.counters["clock_syncs"] += 1
        target = _now().astimezone(link.uitd.zone)
        await self._downstream(
            session,
            link.uitd,
            ClockSync(TimeLabel.of(target)),
            "clock_sync",
            {"skew_s": round(skew, 1)},
        )

    async def _dead(self, topic: str, raw: bytes, reason: str, detail: str) -> None:
        self.counters[f"dead_{reason}"] += 1
        await self.store.dead_letters([DeadFrame(topic, raw, reason, detail, _now())])
