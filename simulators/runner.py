"""From a handful of arguments to a finished simulation: what the CLI and demos call."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from core.models import Device
from simulators.community import demo_devices
from simulators.connection import Protocol
from simulators.credentials import DeviceCredentials
from simulators.model import COMMUNITY_TZ
from simulators.parallel import run_parallel
from simulators.publisher import Simulator
from simulators.stats import Progress, SimulationStats

__all__ = ["run_simulation"]


def run_simulation(
    *,
    mqtt_url: str,
    community_id: str = "demo",
    devices: int = 100,
    roster: Sequence[Device] | None = None,
    seed: int = 0,
    rate: float | None = None,
    duration_s: float | None = None,
    max_messages: int | None = None,
    incident_scale: float = 1.0,
    time_zone: ZoneInfo = COMMUNITY_TZ,
    protocol: Protocol = "auto",
    per_device_connections: bool | None = None,
    credentials: Mapping[str, DeviceCredentials] | None = None,
    mark_offline_on_stop: bool = True,
    processes: int = 1,
    progress_interval_s: float = 5.0,
    on_progress: Callable[[Progress], None] | None = None,
    handle_signals: bool = False,
) -> SimulationStats:
    """Simulate ``roster``, or ``devices`` demo devices of ``community_id``, to the end.

    ``rate``: telemetry messages a second in total; None for each device's own
    interval, ``math.inf`` for as fast as the broker confirms. ``processes``
    above 1 splits the fleet between that many simulator processes. With
    ``handle_signals`` (main thread only), SIGINT and SIGTERM end the run
    cleanly; a second one interrupts as usual.
    """
    fleet = (
        list(roster)
        if roster is not None
        else demo_devices(community_id=community_id, count=devices, seed=seed)
    )
    # What each Simulator of the run is given, in this process or in several.
    options: dict[str, Any] = {
        "mqtt_url": mqtt_url,
        "rate": rate,
        "duration_s": duration_s,
        "max_messages": max_messages,
        "credentials": credentials,
        "progress_interval_s": progress_interval_s,
        "on_progress": on_progress,
        "seed": seed,
        "time_zone": time_zone,
        "incident_scale": incident_scale,
        "protocol": protocol,
        "per_device_connections": per_device_connections,
        "mark_offline_on_stop": mark_offline_on_stop,
    }
    if processes > 1:
        stop = threading.Event()
        with _stop_on_signals(stop.set) if handle_signals else _nothing():
            return run_parallel(devices=fleet, processes=processes, stop=stop, **options)
    simulator = Simulator(devices=fleet, **options)
    with _stop_on_signals(simulator.stop) if handle_signals else _nothing():
        return simulator.run()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    # A clean stop publishes the offline statuses and waits for PUBACKs;
    # the default handler would kill the run with messages in flight.
    previous = {int(signum): signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def restore(signum: int) -> None:
        handler = previous[signum]
        # None: a handler installed outside Python, which cannot be put back from here.
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop()
        restore(signum)

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum in previous:
            restore(signum)
