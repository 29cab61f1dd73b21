"""Faults on purpose for the tests of the pipeline's boundaries (``SC_TEST_HOOKS__*``).

Each stands for something real that the tests cannot otherwise make happen on
demand: a bug that one message triggers, a crash in a C extension, a thread
that dies. Off (and free) unless set.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from alerts.engine import Engine
from alerts.model import EventObs, ReadingColumns
from core.settings import FaultHookSettings
from gateway.bridge import InboundMessage

__all__ = ["FaultHooks"]


class FaultHooks:
    def __init__(self, settings: FaultHookSettings) -> None:
        self._raise = settings.raise_marker.encode() if settings.raise_marker else None
        self._crash = settings.crash_marker.encode() if settings.crash_marker else None
        self._kill = settings.kill_thread
        self._kill_at = time.monotonic() + settings.kill_after_s
        self._evaluate_raise = settings.evaluate_raise_device

    @property
    def active(self) -> bool:
        hooks = (self._raise, self._crash, self._kill, self._evaluate_raise)
        return any(x is not None for x in hooks)

    def on_engine(self, engine: Engine) -> None:
        """Make every rule of ``engine`` raise on the chosen device's readings and events,
        from inside the evaluator's own call (as a bug in a rule would)."""
        device = self._evaluate_raise
        if device is None:
            return
        for evaluator in engine.evaluators.values():
            real_readings, real_event = evaluator.on_readings, evaluator.on_event

            def on_readings(
                metric: str, group: ReadingColumns, rs: Any, ctx: Any, _real: Any = real_readings
            ) -> None:
                _real(metric, group, rs, ctx)
                if device in group.device_ids:
                    raise RuntimeError(f"test hook: a rule fails on {device!r}")

            def on_event(event: EventObs, rs: Any, ctx: Any, _real: Any = real_event) -> None:
                if event.device.device_id == device:
                    raise RuntimeError(f"test hook: a rule fails on {device!r}")
                _real(event, rs, ctx)

            # Instance attributes shadow the methods: this engine only, test runs only.
            evaluator.on_readings = on_readings  # type: ignore[method-assign]
            evaluator.on_event = on_event  # type: ignore[method-assign]

    def on_message(self, message: InboundMessage) -> None:
        if self._crash is not None and self._crash in message.payload:
            # What a segfault in a C extension does: no cleanup, no exception, no ack.
            os.kill(os.getpid(), signal.SIGSEGV)
        if self._raise is not None and self._raise in message.payload:
            raise RuntimeError("test hook: this message breaks validation")

    def on_beat(self, thread: str) -> None:
        if thread == self._kill and time.monotonic() >= self._kill_at:
            raise RuntimeError(f"test hook: thread {thread!r} killed")
