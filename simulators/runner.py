"""From a handful of arguments to a finished simulation: what the CLI and demos call."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from zoneinfo import ZoneInfo

from simulators.community import demo_devices
from simulators.connection import Protocol
from simulators.model import COMMUNITY_TZ
from simulators.publisher import Simulator
from simulators.stats import Progress, SimulationStats

__all__ = ["run_simulation"]


def run_simulation(
    *,
    mqtt_url: str,
    community_id: str = "demo",
    devices: int = 100,
    seed: int = 0,
    rate: float | None = None,
    duration_s: float | None = None,
    max_messages: int | None = None,
    incident_scale: float = 1.0,
    time_zone: ZoneInfo = COMMUNITY_TZ,
    protocol: Protocol = "auto",
    per_device_connections: bool = False,
    mark_offline_on_stop: bool = True,
    progress_interval_s: float = 5.0,
    on_progress: Callable[[Progress], None] | None = None,
    handle_signals: bool = False,
) -> SimulationStats:
    """Simulate ``devices`` demo devices of ``community_id`` until the duration or count.

    ``rate``: telemetry messages a second in total; None for each device's own
    interval, ``math.inf`` for as fast as the broker confirms. With
    ``handle_signals`` (main thread only), SIGINT and SIGTERM end the run
    cleanly; a second one interrupts as usual.
    """
    roster = demo_devices(community_id=community_id, count=devices, seed=seed)
    simulator = Simulator(
        devices=roster,
        mqtt_url=mqtt_url,
        seed=seed,
        rate=rate,
        duration_s=duration_s,
        max_messages=max_messages,
        time_zone=time_zone,
        incident_scale=incident_scale,
        protocol=protocol,
        per_device_connections=per_device_connections,
        mark_offline_on_stop=mark_offline_on_stop,
        progress_interval_s=progress_interval_s,
        on_progress=on_progress,
    )
    if not handle_signals:
        return simulator.run()
    with _stop_on_signals(simulator):
        return simulator.run()


@contextmanager
def _stop_on_signals(simulator: Simulator) -> Iterator[None]:
    # A clean stop publishes the offline statuses and waits for PUBACKs;
    # the default handler would kill the run with messages in flight.
    previous = {int(signum): signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def restore(signum: int) -> None:
        handler = previous[signum]
        # None: a handler installed outside Python, which cannot be put back from here.
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        simulator.stop()
        restore(signum)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum in previous:
            restore(signum)
