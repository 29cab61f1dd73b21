"""The duty roster in the database: shifts and exceptions of a team, who is on duty
at an instant (``core.roster`` decides), the ladder's order, a building's team.

Functions take a psycopg connection and the time; they only read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from core.roster import Absence, AbsenceKind, Shift, on_duty, uncovered_until

__all__ = [
    "TEAM_COLUMNS",
    "ShiftRow",
    "TeamDuty",
    "community_zone",
    "duty_teams",
    "load_roster",
    "on_duty_now",
    "roster_order",
    "team_duty",
    "team_of",
]

Conn = psycopg.Connection[Any]


def community_zone(conn: Conn, community_id: str) -> ZoneInfo:
    row = conn.execute(
        "SELECT time_zone FROM communities WHERE id = %s", (community_id,)
    ).fetchone()
    return ZoneInfo(str(row[0]) if row else "Asia/Shanghai")


def load_roster(conn: Conn, team_id: str, at: datetime) -> tuple[list[Shift], list[Absence]]:
    shifts = [
        Shift(r, int(w), s, e)
        for r, w, s, e in conn.execute(
            "SELECT responder_id, weekday, starts, ends FROM shifts WHERE team_id = %s ORDER BY id",
            (team_id,),
        )
    ]
    people = sorted({s.responder_id for s in shifts})
    absences = [
        Absence(r, AbsenceKind(k), s, e, sub)
        for r, k, s, e, sub in conn.execute(
            "SELECT responder_id, kind, starts_at, ends_at, substitute_id FROM roster_exceptions"
            " WHERE responder_id = ANY(%s) AND ends_at > %s - interval '1 day'"
            " AND starts_at < %s + interval '1 day'",
            (people, at, at),
        )
    ]
    return shifts, absences


def on_duty_now(conn: Conn, team_id: str, at: datetime) -> list[str]:
    row = conn.execute("SELECT community_id FROM teams WHERE id = %s", (team_id,)).fetchone()
    if row is None:
        return []
    shifts, absences = load_roster(conn, team_id, at)
    return on_duty(shifts, absences, at, community_zone(conn, str(row[0])))


def roster_order(conn: Conn, team_id: str, at: datetime) -> list[str]:
    """On duty now first, then the team's other responders in the order of their shifts."""
    shifts, _ = load_roster(conn, team_id, at)
    order = on_duty_now(conn, team_id, at)
    for shift in shifts:
        if shift.responder_id not in order:
            order.append(shift.responder_id)
    return order


def team_of(conn: Conn, community: str, building: str | None, kind: str) -> str | None:
    """The building's team of a kind, else the community's."""
    row = conn.execute(
        "SELECT id FROM teams WHERE community_id = %s AND kind = %s"
        " AND (building_id = %s OR building_id IS NULL)"
        " ORDER BY building_id IS NULL, id LIMIT 1",
        (community, kind, building),
    ).fetchone()
    return None if row is None else str(row[0])


# --- the duty board -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShiftRow:
    id: int
    responder_id: str
    weekday: int
    starts: time
    ends: time


@dataclass(frozen=True, slots=True)
class TeamDuty:
    """A team with its shifts, who is on duty now, and the first moment in the next 24 h
    with nobody on duty."""

    id: str
    community_id: str
    building_id: str | None
    name: str
    kind: str
    leader_id: str | None
    shifts: list[ShiftRow]
    on_duty: list[str]
    uncovered_at: datetime | None


TEAM_COLUMNS = "id, community_id, building_id, name, kind, leader_id"


def team_duty(conn: Conn, row: Sequence[Any], now: datetime) -> TeamDuty:
    """``row``: a team's ``TEAM_COLUMNS``."""
    team_id, community, building, name, kind, leader = row
    shifts = [
        ShiftRow(*r)
        for r in conn.execute(
            "SELECT id, responder_id, weekday, starts, ends FROM shifts WHERE team_id = %s"
            " ORDER BY id",
            (team_id,),
        )
    ]
    roster, absences = load_roster(conn, team_id, now)
    return TeamDuty(
        id=team_id,
        community_id=community,
        building_id=building,
        name=name,
        kind=kind,
        leader_id=leader,
        shifts=shifts,
        on_duty=on_duty_now(conn, team_id, now),
        uncovered_at=uncovered_until(roster, absences, now, community_zone(conn, community)),
    )


def duty_teams(conn: Conn, community_id: str, now: datetime) -> list[TeamDuty]:
    """Every team of the community, by id, as the duty board shows it."""
    rows = conn.execute(
        f"SELECT {TEAM_COLUMNS} FROM teams WHERE community_id = %s ORDER BY id".encode(),  # noqa: S608 - constant columns
        (community_id,),
    ).fetchall()
    return [team_duty(conn, row, now) for row in rows]
