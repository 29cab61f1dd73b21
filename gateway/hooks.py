"""Faults on purpose for the tests of the pipeline's boundaries (``SC_TEST_HOOKS__*``).

Each stands for something real that the tests cannot otherwise make happen on
demand: a bug that one message triggers, a crash in a C extension, a thread
that dies. Off (and free) unless set.
"""

from __future__ import annotations

import os
import signal
import time

from core.settings import FaultHookSettings
from gateway.bridge import InboundMessage

__all__ = ["FaultHooks"]


class FaultHooks:
    def __init__(self, settings: FaultHookSettings) -> None:
        self._raise = settings.raise_marker.encode() if settings.raise_marker else None
        self._crash = settings.crash_marker.encode() if settings.crash_marker else None
        self._kill = settings.kill_thread
        self._kill_at = time.monotonic() + settings.kill_after_s

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self._raise, self._crash, self._kill))

    def on_message(self, message: InboundMessage) -> None:
        if self._crash is not None and self._crash in message.payload:
            # What a segfault in a C extension does: no cleanup, no exception, no ack.
            os.kill(os.getpid(), signal.SIGSEGV)
        if self._raise is not None and self._raise in message.payload:
            raise RuntimeError("test hook: this message breaks validation")

    def on_beat(self, thread: str) -> None:
        if thread == self._kill and time.monotonic() >= self._kill_at:
            raise RuntimeError(f"test hook: thread {thread!r} killed")
