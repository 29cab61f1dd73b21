"""A community's service figures for a month: pure arithmetic over alert records.

Percentiles interpolate linearly between ranks (PostgreSQL's ``percentile_cont``,
numpy's default): the median of 60 s and 120 s is 90 s. Times are seconds from
``raised_at`` (the engine's clock when the alert opened) to the first
acknowledgement and to resolution. Suppressed alerts (maintenance) count in the
totals but not in response times: nobody was asked to respond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "ACK_TARGET_S",
    "AlertRecord",
    "Figures",
    "figures",
    "percentile",
]

# The micro fire station's "3 minutes on scene": an alarm must be taken up within 3 min.
ACK_TARGET_S = 180.0
SEVERITIES = ("info", "warning", "minor", "major", "critical")


@dataclass(frozen=True, slots=True)
class AlertRecord:
    alert_class: str  # device class (fire, locker, access, wearable), "visits", or "other"
    severity: str
    raised_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    suppressed: bool = False


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Figures:
    alerts: int
    by_class_severity: dict[str, dict[str, int]]
    acknowledged: int
    resolved: int
    ack_median_s: float | None
    ack_p90_s: float | None
    resolve_median_s: float | None
    resolve_p90_s: float | None
    # Fire alerts acknowledged within ACK_TARGET_S, over fire alerts someone had to answer.
    fire_alerts: int
    fire_ack_within_target: int
    # Every alert class, same measure.
    ack_within_target: int
    suppressed: int

    @property
    def fire_ack_within_target_share(self) -> float | None:
        return self.fire_ack_within_target / self.fire_alerts if self.fire_alerts else None

    @property
    def ack_within_target_share(self) -> float | None:
        answerable = self.alerts - self.suppressed
        return self.ack_within_target / answerable if answerable > 0 else None


def _seconds(later: datetime | None, earlier: datetime) -> float | None:
    return None if later is None else max((later - earlier).total_seconds(), 0.0)


def figures(records: Sequence[AlertRecord]) -> Figures:
    by: dict[str, dict[str, int]] = {}
    acks: list[float] = []
    resolves: list[float] = []
    fire = fire_fast = fast = suppressed = 0
    for r in records:
        row = by.setdefault(r.alert_class, dict.fromkeys(SEVERITIES, 0))
        row[r.severity] = row.get(r.severity, 0) + 1
        if r.suppressed:
            suppressed += 1
            continue
        ack = _seconds(r.acknowledged_at, r.raised_at)
        res = _seconds(r.resolved_at, r.raised_at)
        if ack is not None:
            acks.append(ack)
        if res is not None:
            resolves.append(res)
        quick = ack is not None and ack <= ACK_TARGET_S
        fast += quick
        if r.alert_class == "fire":
            fire += 1
            fire_fast += quick
    return Figures(
        alerts=len(records),
        by_class_severity={k: by[k] for k in sorted(by)},
        acknowledged=len(acks),
        resolved=len(resolves),
        ack_median_s=percentile(acks, 50),
        ack_p90_s=percentile(acks, 90),
        resolve_median_s=percentile(resolves, 50),
        resolve_p90_s=percentile(resolves, 90),
        fire_alerts=fire,
        fire_ack_within_target=fire_fast,
        ack_within_target=fast,
        suppressed=suppressed,
    )
