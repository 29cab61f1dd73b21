"""The demo's building fire panel: the fire bridge and a simulated UITD on loopback.

The UITD stays connected with heartbeats; now and then its panel reports a fire
alarm on a smoke detector (a critical alert on the board at once), which is
reset a minute later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import psycopg

from core.settings import Settings
from firebridge.registry import register_uitd
from firebridge.server import FireBridge
from firebridge.service import run_fire_bridge
from simulators.uitd import FIRE, NORMAL, SMOKE_1, SimulatedUitd
from store import fire_panels

__all__ = ["DEMO_UITD", "ensure_demo_uitd", "run_panel_demo"]

_LOG = logging.getLogger(__name__)
DEMO_UITD = "demo-uitd-01"
DEMO_UITD_ADDRESS = bytes.fromhex("793000000001")
DEMO_BUILDING = "panel-b1"
HEARTBEAT_S = 20.0
# The fire alarm stays on the panel this long before it is reset.
ALARM_HELD_S = 60.0


def ensure_demo_uitd(url: str, community_id: str) -> None:
    """The demo's UITD, auto-provisioning its panel's points, registered once."""
    with psycopg.connect(url, autocommit=True) as conn:
        if fire_panels.uitd_exists(conn, DEMO_UITD):
            return
        register_uitd(
            conn,
            device_id=DEMO_UITD,
            community_id=community_id,
            address=DEMO_UITD_ADDRESS,
            building=DEMO_BUILDING,
            name="Demo fire panel UITD",
            auto_provision=True,
            heartbeat_s=60,
        )


async def _panel(port: int, stop: threading.Event, first_s: float, every_s: float) -> None:
    uitd = SimulatedUitd("127.0.0.1", port, DEMO_UITD_ADDRESS)
    await uitd.connect()
    loop = asyncio.get_running_loop()
    next_alarm = loop.time() + first_s
    reset_at: float | None = None
    try:
        while not stop.is_set():
            now = loop.time()
            if now >= next_alarm:
                next_alarm = now + every_s
                reset_at = now + ALARM_HELD_S
                answer = await uitd.send_unit([uitd.component(SMOKE_1, NORMAL | FIRE)])
                _LOG.info("demo panel: fire alarm on a smoke detector (answer %s)", answer)
            elif reset_at is not None and now >= reset_at:
                reset_at = None
                await uitd.send_unit([uitd.component(SMOKE_1, NORMAL)])
            else:
                await uitd.heartbeat()
            await asyncio.sleep(min(HEARTBEAT_S, max(0.5, next_alarm - loop.time())))
    finally:
        await uitd.close()


def run_panel_demo(
    settings: Settings, stop: threading.Event, *, first_s: float, every_s: float
) -> None:
    """Thread target: the bridge on a free port and the panel, until ``stop``."""

    async def main() -> None:
        started = asyncio.Event()
        holder: list[FireBridge] = []

        def on_started(bridge: FireBridge) -> None:
            holder.append(bridge)
            started.set()

        update = {"host": "127.0.0.1", "port": 0}
        bridge_settings = settings.model_copy(
            update={"fire_bridge": settings.fire_bridge.model_copy(update=update)}
        )
        tasks = [asyncio.create_task(run_fire_bridge(bridge_settings, on_started=on_started))]
        try:
            waiting = asyncio.create_task(started.wait())
            await asyncio.wait({tasks[0], waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if tasks[0].done():
                await tasks[0]
                return
            port = holder[0].port
            assert port is not None
            tasks.append(asyncio.create_task(_panel(port, stop, first_s, every_s)))
            # ``stop`` is a threading.Event of the demo's main thread.
            await asyncio.to_thread(stop.wait)
        finally:
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    try:
        asyncio.run(main())
    except Exception:  # noqa: BLE001 - the thread's boundary: the demo goes on without its panel
        _LOG.exception("the demo's fire panel stopped")
