"""Device clocks: what time a reading "is" for freshness, when the device's clock lies.

Readings are stored with the device's own time (that is what happened when),
but a device time cannot be trusted to say how fresh a device is: a clock 3 h
fast would pin ``latest`` and ``last_seen`` in the future, and correct readings
afterwards would never replace them. Every "newest" and "is it fresh" decision
therefore uses the device time capped at the receive time plus a small
tolerance (network and NTP jitter). A clock that is fixed later needs nothing:
its next readings are newer than the capped ones.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["CLOCK_TOLERANCE", "CLOCK_TOLERANCE_S", "fresh_time"]

# Clock jitter a healthy NTP-synchronised device shows, plus the network: no more.
CLOCK_TOLERANCE_S = 5
CLOCK_TOLERANCE = timedelta(seconds=CLOCK_TOLERANCE_S)


def fresh_time(device_time: datetime, received_at: datetime) -> datetime:
    """The device time, but never more than the tolerance ahead of receipt."""
    return min(device_time, received_at + CLOCK_TOLERANCE)
