"""Is a device online? The retained status, its Last Will, and silence against its interval.

Three signals, each incomplete on its own:

- the retained ``status`` channel: ``{"online": true}`` after connecting, and the
  Last Will ``{"online": false}`` the broker publishes when the connection dies;
- data: a device that reports is alive whatever its status says (battery devices
  on NB-IoT never hold an MQTT session at all);
- silence: no data for ``INACTIVITY_FACTOR`` expected intervals is offline, even
  if the last status said online (a hung device keeps its TCP session alive).

Status messages of one device are ordered by the broker (our receive time),
never by a ``ts`` inside them: a Will is composed at connect time, so its ``ts``
is older than the online status that followed, yet when the broker publishes it
the link is gone. The ingest writer keeps the status received last, and here
data received after an offline status overrides it. Freshness uses device time
capped at receipt (``core.clock``), so a fast clock cannot keep a device "online".

Pure: the caller passes ``now``, so a test controls the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

__all__ = [
    "INACTIVITY_FACTOR",
    "LOW_BATTERY_PERCENT",
    "WEAK_SIGNAL_DBM",
    "Connectivity",
    "Presence",
    "judge",
    "low_battery",
    "weak_signal",
]

# Two missed reports in a row: one late report is jitter, two is a device in trouble.
# The same factor decides the API's "reporting" flag and the sc_devices_reporting gauge.
INACTIVITY_FACTOR = 2
# Below this the battery lasts days, not weeks: time to send someone.
LOW_BATTERY_PERCENT = 20.0
# Below -100 dBm (LTE/NB-IoT "poor" band) messages are lost and retried.
WEAK_SIGNAL_DBM = -100.0


class Connectivity(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # its status (or Last Will) said offline, nothing since
    SILENT = "silent"  # no data for INACTIVITY_FACTOR expected intervals
    NEVER_SEEN = "never_seen"  # registered, nothing received yet (not commissioned)
    RETIRED = "retired"  # decommissioned


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    state: str
    expected_interval_s: int
    last_received_at: datetime | None
    online: bool | None
    status_at: datetime | None


def judge(presence: Presence, now: datetime) -> Connectivity:
    """The device's connectivity at ``now``."""
    if presence.state == "decommissioned":
        return Connectivity.RETIRED
    data_at = presence.last_received_at
    said_offline = presence.online is False and presence.status_at is not None
    if said_offline and (data_at is None or data_at <= presence.status_at):  # type: ignore[operator]
        return Connectivity.OFFLINE
    activity = data_at
    if presence.online and presence.status_at is not None:
        activity = presence.status_at if activity is None else max(activity, presence.status_at)
    if activity is None:
        return Connectivity.NEVER_SEEN
    grace = timedelta(seconds=INACTIVITY_FACTOR * presence.expected_interval_s)
    if now - activity > grace:
        return Connectivity.SILENT
    return Connectivity.ONLINE


def low_battery(battery: float | None) -> bool:
    return battery is not None and battery < LOW_BATTERY_PERCENT


def weak_signal(rssi: float | None) -> bool:
    return rssi is not None and rssi < WEAK_SIGNAL_DBM
