"""Duty rosters: who of a team is on duty at an instant. Pure; the clock is passed in.

A shift is a weekday (0 Monday .. 6 Sunday) and a local start and end time in the
community's time zone (Asia/Shanghai by default, which has no daylight saving).
A shift whose end is not after its start runs past midnight: Sunday 22:00-06:00
covers Sunday 22:00 to Monday 06:00, across the week's end; an end equal to the
start is a 24-hour shift. Exceptions are absolute instants: leave takes the
responder off their shifts in that interval, a swap puts a substitute on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = [
    "Absence",
    "AbsenceKind",
    "Shift",
    "on_duty",
    "shift_covers",
    "uncovered_until",
]

# How far ahead "nobody on duty" is looked for on the board: the next day is what a
# duty planner can still fix.
LOOKAHEAD = timedelta(hours=24)
_STEP = timedelta(minutes=1)


class AbsenceKind(StrEnum):
    LEAVE = "leave"
    SWAP = "swap"


@dataclass(frozen=True, slots=True)
class Shift:
    responder_id: str
    weekday: int
    starts: time
    ends: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError("weekday is 0 (Monday) to 6 (Sunday)")


@dataclass(frozen=True, slots=True)
class Absence:
    responder_id: str
    kind: AbsenceKind
    starts_at: datetime
    ends_at: datetime
    substitute_id: str | None = None

    def covers(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


def shift_covers(shift: Shift, local: datetime) -> bool:
    """Whether ``shift`` is running at ``local`` (a time in the community's zone)."""
    moment, weekday = local.time().replace(tzinfo=None), local.weekday()
    if shift.starts < shift.ends:
        return shift.weekday == weekday and shift.starts <= moment < shift.ends
    # Past midnight (or 24 h): the evening part on its day, the morning part on the next.
    if shift.weekday == weekday and moment >= shift.starts:
        return True
    return (shift.weekday + 1) % 7 == weekday and moment < shift.ends


def on_duty(
    shifts: Sequence[Shift], absences: Iterable[Absence], at: datetime, tz: ZoneInfo
) -> list[str]:
    """Responder ids on duty at ``at``, in the order of their shifts, no repeats."""
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    local = at.astimezone(tz)
    away = {a.responder_id: a for a in absences if a.covers(at)}
    found: list[str] = []
    for shift in shifts:
        if not shift_covers(shift, local):
            continue
        who: str | None = shift.responder_id
        absence = away.get(shift.responder_id)
        if absence is not None:
            who = absence.substitute_id if absence.kind is AbsenceKind.SWAP else None
        if who is not None and who not in found:
            found.append(who)
    return found


def uncovered_until(
    shifts: Sequence[Shift],
    absences: Sequence[Absence],
    start: datetime,
    tz: ZoneInfo,
    horizon: timedelta = LOOKAHEAD,
) -> datetime | None:
    """The first instant from ``start`` within ``horizon`` with nobody on duty (at
    minute resolution, as rosters are written), or None."""
    moment = start.replace(second=0, microsecond=0)
    end = start + horizon
    while moment <= end:
        if not on_duty(shifts, absences, max(moment, start), tz):
            return max(moment, start)
        moment += _STEP
    return None
