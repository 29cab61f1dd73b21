"""Recent-sequence window: drops a device's resend before it costs a database round trip.

The database's natural key (device, metric, device time) is what guarantees
exactly-once storage; this window also catches a resend the device re-stamped
with a new time, when it reuses the ``seq`` within a few minutes.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta

__all__ = ["SeqWindow"]

# About 30 s of traffic at 10k msgs/s: redelivery after a reconnect falls inside it.
DEFAULT_CAPACITY = 300_000
# A seq reused further apart than this is a counter reset after a reboot, not a resend.
RESEND_SPAN = timedelta(minutes=5)


class SeqWindow:
    """Safe because one worker commits batches in order: a message recorded here is
    either committed by this process (possibly in an earlier batch still being
    retried) or lost with the process, whose restart starts an empty window."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[tuple[str, int], datetime] = OrderedDict()

    def is_duplicate(self, device_id: str, seq: int | None, ts: datetime) -> bool:
        """Record (device, seq) and say whether it repeats a recent message."""
        if seq is None:
            return False
        key = (device_id, seq)
        first = self._seen.get(key)
        if first is not None and abs(ts - first) <= RESEND_SPAN:
            return True
        self._seen[key] = ts
        self._seen.move_to_end(key)
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return False
