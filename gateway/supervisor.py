"""No thread dies silently: one supervisor boundary for every pipeline thread.

Each thread the pipeline runs (intake, commit, listener, and the heartbeat
itself) is started here, and so are the service threads beside it (webhook
deliveries, storage maintenance); paho's network threads (intake's and the
alert publisher's) are watched. If one raises, returns while the pipeline is meant to
run, or stops beating for ``stall_s``, the supervisor logs why, marks the
worker ``failed`` (so ``/health`` says so at once), asks everything to stop and,
in a service process, ends the process with ``EXIT_THREAD_FAILED`` within
``exit_after_s`` even if a thread will not stop: a supervisor such as systemd
restarts it, and the broker redelivers whatever was not acknowledged. A
process that is alive but storing nothing is what this rules out.

The heartbeat thread reports ``running`` every ``HEARTBEAT_S`` while all is
well; the API calls a worker unhealthy when its state is ``failed`` or its
heartbeat is older than a few beats.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from core.errors import ServiceUnavailable, SmartCommunityError

__all__ = ["EXIT_THREAD_FAILED", "HEARTBEAT_S", "PipelineFailed", "Supervisor"]

_LOG = logging.getLogger(__name__)
# sysexits' EX_SOFTWARE: an internal error, not a configuration or usage one.
EXIT_THREAD_FAILED = 70
# How often a healthy worker says so; the API allows a few missed beats.
HEARTBEAT_S = 1.0
# How often the supervisor looks at its threads.
_WATCH_S = 0.2


class PipelineFailed(SmartCommunityError):
    """A pipeline thread ended unexpectedly; the process must not go on."""

    def __init__(self, thread: str, cause: str) -> None:
        super().__init__(f"pipeline thread {thread!r} failed: {cause}")
        self.thread = thread
        self.cause = cause


# Reports the worker's state ("running", "failed", "stopped") and the failure text.
StateReporter = Callable[[str, str], None]


class Supervisor:
    def __init__(
        self,
        *,
        stop: threading.Event,
        report: StateReporter | None = None,
        stall_s: float = 300.0,
        exit_after_s: float | None = None,
        on_beat: Callable[[str], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.stop = stop
        self.on_failure = on_failure
        self.report = report
        self.stall_s = stall_s
        self.exit_after_s = exit_after_s
        self.on_beat = on_beat
        self.failure: PipelineFailed | None = None
        self._threads: dict[str, threading.Thread] = {}
        self._beats: dict[str, float] = {}
        self._checks: dict[str, Callable[[], bool]] = {}
        self._no_stall: set[str] = set()
        self._report_lock = threading.Lock()
        self._lock = threading.Lock()

    # -- the threads ----------------------------------------------------------------

    def start(self, name: str, target: Callable[..., object], *args: Any) -> threading.Thread:
        """Run ``target(*args)`` on a thread named ``name`` inside the boundary."""
        return self._start(name, target, args, stalls=True)

    def start_service(
        self, name: str, target: Callable[..., object], *args: Any
    ) -> threading.Thread:
        """As ``start``, for a thread whose turns may rightly take long (webhook
        deliveries, storage maintenance): its end is a failure, its silence is not."""
        return self._start(name, target, args, stalls=False)

    def _start(
        self, name: str, target: Callable[..., object], args: tuple[Any, ...], *, stalls: bool
    ) -> threading.Thread:
        thread = threading.Thread(target=self._boundary, args=(name, target, args), name=name)
        with self._lock:
            self._threads[name] = thread
            self._beats[name] = time.monotonic()
            if not stalls:
                self._no_stall.add(name)
        thread.start()
        return thread

    def watch(self, name: str, alive: Callable[[], bool]) -> None:
        """Also watch a thread we did not start (paho's network thread)."""
        self._checks[name] = alive

    def beat(self, name: str) -> None:
        """Called by each supervised thread on every turn of its loop."""
        self._beats[name] = time.monotonic()
        if self.on_beat is not None:
            self.on_beat(name)

    def _boundary(self, name: str, target: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - the thread's one boundary
            _LOG.critical("pipeline thread %r died: %r", name, exc, exc_info=exc)
            self.fail(name, f"{type(exc).__name__}: {exc}")
            return
        if not self.stop.is_set():
            self.fail(name, "returned while the pipeline was running")

    # -- failure ----------------------------------------------------------------------

    def fail(self, name: str, cause: str) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = PipelineFailed(name, cause)
        _LOG.critical("pipeline failed (%s: %s); stopping", name, cause)
        self.stop.set()
        if self.exit_after_s is not None:
            # Stopping (or saying so, below) may hang on the very thing that failed:
            # the process ends regardless.
            timer = threading.Timer(self.exit_after_s, _hard_exit, args=(name,))
            timer.daemon = True
            timer.start()
        if self.on_failure is not None:
            try:
                self.on_failure()
            except Exception:  # noqa: BLE001 - the exit must not depend on it
                _LOG.exception("on_failure of the supervisor raised")
        self._report("failed", f"{name}: {cause}")

    def _report(self, state: str, failure: str = "") -> None:
        if self.report is None:
            return
        # A "running" decided before a failure must not land after its "failed": a
        # service thread may die before the pipeline's threads start (or a beat races
        # the failure), and /health would then see a stale heartbeat, not the failure.
        with self._report_lock:
            if state == "running" and self.failure is not None:
                return
            self._write_report(state, failure)

    def _write_report(self, state: str, failure: str) -> None:
        assert self.report is not None
        try:
            self.report(state, failure)
        except ServiceUnavailable as exc:
            _LOG.debug("worker state %s not saved: %s", state, exc)
        except Exception:  # noqa: BLE001 - reporting must never be what fails the pipeline
            _LOG.exception("worker state %s not saved", state)

    # -- the watch --------------------------------------------------------------------

    def problem(self) -> tuple[str, str] | None:
        """The first thread found dead or stalled, and why; None when all are well."""
        now = time.monotonic()
        with self._lock:
            threads = dict(self._threads)
        for name, thread in threads.items():
            if thread is threading.current_thread():
                continue
            if not thread.is_alive():
                return name, "ended"
            if name not in self._no_stall and now - self._beats[name] > self.stall_s:
                return name, f"no progress for {now - self._beats[name]:.0f} s"
        for name, alive in self._checks.items():
            if not alive():
                return name, "ended"
        return None

    def heartbeat_loop(self) -> None:
        """The heartbeat thread: watch the others, say "running" while all are well."""
        name = threading.current_thread().name
        last_report = 0.0
        while not self.stop.wait(_WATCH_S):
            self.beat(name)
            found = self.problem()
            # Threads end by design once a stop is under way; only exceptions count then,
            # and the boundary catches those.
            if found is not None and not self.stop.is_set():
                self.fail(*found)
                return
            now = time.monotonic()
            if now - last_report >= HEARTBEAT_S:
                last_report = now
                self._report("running")

    def starting(self) -> None:
        """Say "running" before the threads start: with group commit the first message
        is handled within milliseconds, and a worker that crashes on it before its first
        heartbeat would otherwise never be seen by /health (its state still unknown)."""
        self._report("running")

    def finished(self) -> None:
        """After the threads were joined: the final state; raises if one failed."""
        if self.failure is not None:
            raise self.failure
        self._report("stopped")


def _hard_exit(name: str) -> None:
    _LOG.critical("thread %r failed and the pipeline did not stop in time: exiting", name)
    logging.shutdown()
    os._exit(EXIT_THREAD_FAILED)
