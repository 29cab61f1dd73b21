"""Visit policies and monthly coverage: pure arithmetic, no I/O, the clock passed in.

A month is a calendar month in the community's time zone (Asia/Shanghai by
default): a visit at 2026-11-30 23:30 Beijing time (15:30 UTC) counts for
November, one at 2026-12-01 00:10 Beijing time (2026-11-30 16:10 UTC) for
December. A visit *counts* when the worker saw the resident (outcome ``well``
or ``needs_follow_up``); ``not_at_home`` is recorded as an attempt only.

The city's KPI (monthly visit rate, 月探访率) is the share of residents under a
policy who were visited at least once in the month. ``policy_met`` is stricter:
a weekly resident must be seen in every week (Monday to Sunday) that began in
the month and has ended within it, and is not "met" before the first such week
has ended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = [
    "COUNTING_OUTCOMES",
    "DEFAULT_DEADLINE_DAY",
    "FOLLOW_UP_DAYS",
    "Coverage",
    "Month",
    "Outcome",
    "Policy",
    "ResidentStatus",
    "Standing",
    "Visit",
    "alert_severity",
    "coverage",
    "resident_status",
]

# The city plan: not yet visited by the 25th leaves a working week to catch up.
DEFAULT_DEADLINE_DAY = 25
# A "needs follow-up" visit opens a task due a week later, unless the worker says otherwise.
FOLLOW_UP_DAYS = 7
_MONTH = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
# Months outside these years are typos, and near year 1 or 9999 the month's bounds in
# a time zone fall outside what dates can hold.
MIN_YEAR, MAX_YEAR = 1970, 2999


class Policy(StrEnum):
    NONE = "none"
    MONTHLY = "monthly"  # e.g. elderly residents in special hardship
    WEEKLY = "weekly"  # e.g. living alone with dementia


class Outcome(StrEnum):
    WELL = "well"
    NEEDS_FOLLOW_UP = "needs_follow_up"
    NOT_AT_HOME = "not_at_home"


COUNTING_OUTCOMES = frozenset({Outcome.WELL, Outcome.NEEDS_FOLLOW_UP})


class Standing(StrEnum):
    OK = "ok"  # visited as the policy asks so far
    DUE = "due"  # not yet visited in the current period; still in time
    OVERDUE = "overdue"  # past the deadline day (monthly) or a past week missed (weekly)
    MISSED = "missed"  # the month is over and the policy was not met


@dataclass(frozen=True, slots=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        match = _MONTH.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid month {text!r}: expected YYYY-MM")
        if not MIN_YEAR <= int(match[1]) <= MAX_YEAR:
            raise ValueError(f"invalid month {text!r}: years {MIN_YEAR}-{MAX_YEAR}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def checked(cls, text: str) -> str:
        """``text`` if it parses (a validator for query parameters)."""
        cls.parse(text)
        return text

    @classmethod
    def of(cls, moment: datetime, tz: ZoneInfo) -> Month:
        local = moment.astimezone(tz)
        return cls(local.year, local.month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    @property
    def last_day(self) -> date:
        return self.next().first_day - timedelta(days=1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) of the month in ``tz``, as UTC instants."""
        return _midnight(self.first_day, tz), _midnight(self.next().first_day, tz)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Visit:
    resident_id: str
    started_at: datetime
    outcome: Outcome

    @property
    def counts(self) -> bool:
        return self.outcome in COUNTING_OUTCOMES


@dataclass(frozen=True, slots=True)
class ResidentStatus:
    resident_id: str
    policy: Policy
    standing: Standing
    visits: int  # counting visits in the month up to now
    attempts: int  # not-at-home visits in the month
    last_visit: datetime | None
    policy_met: bool
    # Weekly policy: weeks (by their Monday) that ended without a visit.
    missed_weeks: tuple[date, ...] = ()


def _weeks(month: Month) -> list[date]:
    """Mondays in the month: each starts a week the weekly policy asks a visit in."""
    first = month.first_day
    monday = first + timedelta(days=(7 - first.weekday()) % 7)
    weeks = []
    while monday <= month.last_day:
        weeks.append(monday)
        monday += timedelta(days=7)
    return weeks


def resident_status(
    resident_id: str,
    policy: Policy,
    visits: Iterable[Visit],
    month: Month,
    tz: ZoneInfo,
    now: datetime,
    deadline_day: int = DEFAULT_DEADLINE_DAY,
) -> ResidentStatus:
    """Where one resident stands in ``month`` as of ``now`` (visits after ``now`` ignored)."""
    start, end = month.bounds(tz)
    horizon = min(now, end)
    inside = [v for v in visits if start <= v.started_at < horizon]
    seen = sorted(v.started_at for v in inside if v.counts)
    attempts = sum(1 for v in inside if not v.counts)
    over = now >= end
    last = seen[-1] if seen else None
    missed: tuple[date, ...] = ()
    if policy is Policy.WEEKLY:
        missed_list: list[date] = []
        judged = 0
        current_open = False
        for monday in _weeks(month):
            w_start = _midnight(monday, tz)
            w_end = _midnight(monday + timedelta(days=7), tz)
            if w_start > horizon:
                break
            hit = any(w_start <= t < w_end for t in seen)
            # Judged only once ended, and only if it ends within the month: a week
            # running into the next month is that month's to judge with its visits.
            if w_end <= now and w_end <= end:
                judged += 1
                if not hit:
                    missed_list.append(monday)
            elif not hit and w_end > now:
                current_open = True
        missed = tuple(missed_list)
        # No week judged yet (the first has not ended) is not "met": nothing is proven.
        met = judged > 0 and not missed
        if missed:
            standing = Standing.MISSED if over else Standing.OVERDUE
        elif current_open or (not seen and not over):
            standing = Standing.DUE
        else:
            standing = Standing.OK
    else:
        met = bool(seen)
        if seen:
            standing = Standing.OK
        elif over:
            standing = Standing.MISSED
        elif now.astimezone(tz).day >= deadline_day:
            standing = Standing.OVERDUE
        else:
            standing = Standing.DUE
    return ResidentStatus(resident_id, policy, standing, len(seen), attempts, last, met, missed)


@dataclass(frozen=True, slots=True)
class Coverage:
    month: Month
    residents: int  # under a policy
    visited: int  # at least one counting visit in the month
    policy_met: int
    statuses: tuple[ResidentStatus, ...]

    @property
    def visit_rate(self) -> float | None:
        """The KPI: share visited at least once; None when nobody is under a policy."""
        return self.visited / self.residents if self.residents else None

    @property
    def policy_met_rate(self) -> float | None:
        return self.policy_met / self.residents if self.residents else None

    def with_standing(self, *standings: Standing) -> list[ResidentStatus]:
        return [s for s in self.statuses if s.standing in standings]


def coverage(
    residents: Sequence[tuple[str, Policy]],
    visits: Iterable[Visit],
    month: Month,
    tz: ZoneInfo,
    now: datetime,
    deadline_day: int = DEFAULT_DEADLINE_DAY,
) -> Coverage:
    """Every resident under a policy (``Policy.NONE`` ones are left out), in id order."""
    by_resident: dict[str, list[Visit]] = {}
    for visit in visits:
        by_resident.setdefault(visit.resident_id, []).append(visit)
    statuses = tuple(
        resident_status(rid, policy, by_resident.get(rid, ()), month, tz, now, deadline_day)
        for rid, policy in sorted(residents)
        if policy is not Policy.NONE
    )
    return Coverage(
        month=month,
        residents=len(statuses),
        visited=sum(1 for s in statuses if s.visits > 0),
        policy_met=sum(1 for s in statuses if s.policy_met),
        statuses=statuses,
    )


def alert_severity(
    status: ResidentStatus, month: Month, tz: ZoneInfo, now: datetime, deadline_day: int
) -> str | None:
    """The visit rule: not visited at all this month by ``deadline_day`` -> "warning";
    still not on the month's last day -> "major" (the escalation). None: no alert."""
    if status.visits > 0 or Month.of(now, tz) != month:
        return None
    today = now.astimezone(tz).date()
    if today >= month.last_day:
        return "major"
    if today.day >= deadline_day:
        return "warning"
    return None
