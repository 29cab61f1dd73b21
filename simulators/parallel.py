"""Several simulator processes as one: the fleet split between them, progress and figures summed.

One Python process publishes as fast as one CPU lets paho build packets; past
that, ``--processes N`` runs N simulators, each with every N-th device, an N-th
of the rate and of the message count, and its own connection. Children report
progress and their final figures over a queue; the parent prints the sums.
A stop (Ctrl-C, SIGTERM) reaches the children through an event, so each ends
as a single simulator does: offline statuses sent, PUBACKs awaited.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from core.errors import ServiceUnavailable
from core.models import Device
from simulators.credentials import DeviceCredentials
from simulators.publisher import Simulator
from simulators.stats import Progress, SimulationStats

__all__ = ["run_parallel", "split"]

log = logging.getLogger(__name__)

# Children report this often; the parent prints at its own interval from the
# latest reports, so its figures lag by at most this.
CHILD_REPORT_S = 1.0
# How quickly a child notices the parent's stop.
STOP_POLL_S = 0.1
# A child that has not finished this long after the run should have is stuck.
FINISH_GRACE_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Done:
    index: int
    stats: SimulationStats | None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Report:
    index: int
    progress: Progress


def split(total: int | None, parts: int, index: int) -> int | None:
    """Part ``index`` of ``total`` shared as evenly as whole numbers allow."""
    if total is None:
        return None
    return total // parts + (1 if index < total % parts else 0)


def _stop_when(stop: MpEvent, finished: threading.Event, simulator: Simulator) -> None:
    # Polled, not stop.wait(): a process that exits while one of its threads sleeps
    # on a multiprocessing Event leaves the parent's set() waiting for it forever.
    while not finished.wait(STOP_POLL_S):
        if stop.is_set():
            simulator.stop()
            return


def _child(
    index: int,
    devices: list[Device],
    options: dict[str, Any],
    reports: multiprocessing.Queue[_Report | _Done],
    stop: MpEvent,
) -> None:
    # The parent decides when to stop: Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        simulator = Simulator(
            devices=devices,
            on_progress=lambda p: reports.put(_Report(index=index, progress=p)),
            **options,
        )
        finished = threading.Event()
        watcher = threading.Thread(target=_stop_when, args=(stop, finished, simulator))
        watcher.start()
        try:
            stats = simulator.run()
        finally:
            finished.set()
            watcher.join()
    except Exception as exc:  # noqa: BLE001 - the boundary of the child: told to the parent
        reports.put(_Done(index=index, stats=None, error=f"{type(exc).__name__}: {exc}"))
        return
    reports.put(_Done(index=index, stats=stats))


def run_parallel(
    *,
    devices: Sequence[Device],
    processes: int,
    mqtt_url: str,
    rate: float | None = None,
    duration_s: float | None = None,
    max_messages: int | None = None,
    client_id: str | None = None,
    credentials: Mapping[str, DeviceCredentials] | None = None,
    progress_interval_s: float = 5.0,
    on_progress: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> SimulationStats:
    """Run ``processes`` simulators over ``devices``; ``options`` go to each ``Simulator``."""
    if processes < 1:
        raise ValueError("processes must be at least 1")
    processes = min(processes, len(devices))
    client_id = client_id or f"sc-sim-{uuid.uuid4().hex[:12]}"
    context = multiprocessing.get_context("spawn")  # no paho threads inherited mid-flight
    reports: multiprocessing.Queue[_Report | _Done] = context.Queue()
    stop_children = context.Event()
    children = []
    for index in range(processes):
        part = list(devices[index::processes])
        child_options = {
            **options,
            "mqtt_url": mqtt_url,
            "rate": None if rate is None else (rate if math.isinf(rate) else rate / processes),
            "duration_s": duration_s,
            "max_messages": split(max_messages, processes, index),
            "client_id": f"{client_id}-{index}",
            "progress_interval_s": min(CHILD_REPORT_S, progress_interval_s),
            "credentials": {d.id: credentials[d.id] for d in part if d.id in credentials}
            if credentials
            else None,
        }
        child = context.Process(
            target=_child,
            args=(index, part, child_options, reports, stop_children),
            name=f"simulator-{index}",
        )
        child.start()
        children.append(child)
    try:
        return _collect(
            reports,
            children,
            stop or threading.Event(),
            stop_children,
            progress_interval_s,
            on_progress,
            duration_s,
        )
    finally:
        stop_children.set()
        for child in children:
            child.join(FINISH_GRACE_S)
            if child.is_alive():
                child.terminate()
                child.join()


def _collect(
    reports: multiprocessing.Queue[_Report | _Done],
    children: list[Any],
    stop: threading.Event,
    stop_children: MpEvent,
    progress_interval_s: float,
    on_progress: Callable[[Progress], None] | None,
    duration_s: float | None,
) -> SimulationStats:
    latest: dict[int, Progress] = {}
    done: dict[int, SimulationStats] = {}
    errors: list[str] = []
    started = time.monotonic()
    next_report = started + progress_interval_s
    last = (started, 0)
    deadline = None if duration_s is None else started + duration_s + FINISH_GRACE_S
    while len(done) + len(errors) < len(children):
        if stop.is_set():
            stop_children.set()
        try:
            item = reports.get(timeout=0.2)
        except queue.Empty:
            item = None
        if isinstance(item, _Report):
            latest[item.index] = item.progress
        elif isinstance(item, _Done):
            if item.stats is not None:
                done[item.index] = item.stats
            else:
                errors.append(f"simulator {item.index}: {item.error}")
                stop_children.set()
        elif not any(child.is_alive() for child in children):
            errors.append("a simulator process died without a word")
            break
        now = time.monotonic()
        if deadline is not None and now > deadline:
            stop_children.set()
        if on_progress is not None and now >= next_report and latest:
            published = sum(p.telemetry + p.events for p in latest.values())
            on_progress(
                Progress(
                    elapsed_s=max(p.elapsed_s for p in latest.values()),
                    telemetry=sum(p.telemetry for p in latest.values()),
                    events=sum(p.events for p in latest.values()),
                    confirmed=sum(p.confirmed for p in latest.values()),
                    rate=(published - last[1]) / (now - last[0]),
                )
            )
            last = (now, published)
            next_report = now + progress_interval_s
    if errors:
        raise ServiceUnavailable("mqtt", "; ".join(errors))
    figures = list(done.values())
    return SimulationStats(
        telemetry=sum(s.telemetry for s in figures),
        events=sum(s.events for s in figures),
        statuses=sum(s.statuses for s in figures),
        confirmed=sum(s.confirmed for s in figures),
        refused=sum(s.refused for s in figures),
        elapsed_s=max(s.elapsed_s for s in figures),
    )
