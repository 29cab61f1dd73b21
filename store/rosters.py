"""Responders, teams and the duty roster in the database: who can be sent, shifts and
exceptions of a team, who is on duty at an instant (``core.roster`` decides), the next
gap in a roster, the ladder's order, a building's team.

The writer of ``responders``, ``teams``, ``shifts`` and ``roster_exceptions``: as the
API and the CLI change them, and a scenario's seeding (``simulators/registration.py``).
Functions take a psycopg connection and the time, and return plain records.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from psycopg import sql

from core.roster import Absence, AbsenceKind, Shift, on_duty, uncovered_until
from store.filters import list_filter
from store.rows import Conn, scalar

__all__ = [
    "DutyBoard",
    "ResponderRecord",
    "ShiftRecord",
    "TeamRecord",
    "add_exception",
    "add_shifts",
    "community_zone",
    "create_responder",
    "create_team",
    "duty_board",
    "get_responder",
    "get_team",
    "list_responders",
    "list_teams",
    "load_roster",
    "on_duty_now",
    "responder_community",
    "roster_order",
    "set_responder_login",
    "set_team_leader",
    "team_of",
]


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
    return scalar(
        conn,
        str,
        "SELECT id FROM teams WHERE community_id = %s AND kind = %s"
        " AND (building_id = %s OR building_id IS NULL)"
        " ORDER BY building_id IS NULL, id LIMIT 1",
        (community, kind, building),
    )


# --- responders and teams, as the API and the CLI show them ---------------------------------


@dataclass(frozen=True, slots=True)
class ResponderRecord:
    id: str
    community_id: str
    name: str
    role: str
    phone: str
    mqtt_username: str | None
    user_id: int | None


@dataclass(frozen=True, slots=True)
class ShiftRecord:
    id: int
    responder_id: str
    weekday: int
    starts: time
    ends: time


@dataclass(frozen=True, slots=True)
class TeamRecord:
    id: str
    community_id: str
    building_id: str | None
    name: str
    kind: str
    leader_id: str | None
    shifts: list[ShiftRecord]
    on_duty: list[str]
    # The first moment in the next 24 h with nobody on duty (a warning on the board).
    uncovered_at: datetime | None


@dataclass(frozen=True, slots=True)
class DutyBoard:
    community_id: str
    as_of: datetime
    teams: list[TeamRecord]
    responders: list[ResponderRecord]


_RESPONDER = "SELECT id, community_id, name, role, phone, mqtt_username, user_id FROM responders"
_TEAM = "SELECT id, community_id, building_id, name, kind, leader_id FROM teams"


# A row of _TEAM: TeamRecord's fields from id to leader_id.
_TeamRow = tuple[str, str, str | None, str, str, str | None]


def _team(conn: Conn, row: _TeamRow, now: datetime) -> TeamRecord:
    team_id, community = row[0], row[1]
    shifts = [
        ShiftRecord(i, r, w, s, e)
        for i, r, w, s, e in conn.execute(
            "SELECT id, responder_id, weekday, starts, ends FROM shifts WHERE team_id = %s"
            " ORDER BY id",
            (team_id,),
        )
    ]
    roster, absences = load_roster(conn, team_id, now)
    return TeamRecord(
        *row,
        shifts=shifts,
        on_duty=on_duty_now(conn, team_id, now),
        uncovered_at=uncovered_until(roster, absences, now, community_zone(conn, community)),
    )


def list_responders(
    conn: Conn, *, within: Collection[str] | None, community_id: str | None, limit: int | None
) -> list[ResponderRecord]:
    """By id; ``within``: only these communities' (None: every community's); ``limit``
    None: all."""
    where, params = list_filter(None, within=within, community_id=community_id)
    query = sql.SQL(_RESPONDER + " WHERE {} ORDER BY id LIMIT %s").format(where)
    return [ResponderRecord(*r) for r in conn.execute(query, [*params, limit])]


def get_responder(conn: Conn, responder_id: str) -> ResponderRecord | None:
    row = conn.execute((_RESPONDER + " WHERE id = %s").encode(), (responder_id,)).fetchone()
    return None if row is None else ResponderRecord(*row)


def responder_community(conn: Conn, responder_id: str) -> str | None:
    return scalar(conn, str, "SELECT community_id FROM responders WHERE id = %s", (responder_id,))


def create_responder(conn: Conn, responder: ResponderRecord) -> ResponderRecord | None:
    """The new responder, or None when its id, MQTT login or user is taken."""
    row = conn.execute(
        "INSERT INTO responders (id, community_id, name, role, phone, mqtt_username, user_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        " RETURNING id, community_id, name, role, phone, mqtt_username, user_id",
        (
            responder.id,
            responder.community_id,
            responder.name,
            responder.role,
            responder.phone,
            responder.mqtt_username,
            responder.user_id,
        ),
    ).fetchone()
    return None if row is None else ResponderRecord(*row)


def add_exception(
    conn: Conn,
    community_id: str,
    responder_id: str,
    kind: str,
    starts_at: datetime,
    ends_at: datetime,
    substitute_id: str | None,
) -> int:
    """Leave or a swap for an interval; its id."""
    row = conn.execute(
        "INSERT INTO roster_exceptions (community_id, responder_id, kind, starts_at, ends_at,"
        " substitute_id) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (community_id, responder_id, kind, starts_at, ends_at, substitute_id),
    ).fetchone()
    assert row is not None  # INSERT ... RETURNING returns the row
    return int(row[0])


def list_teams(
    conn: Conn,
    *,
    within: Collection[str] | None,
    community_id: str | None,
    now: datetime,
    limit: int | None,
) -> list[TeamRecord]:
    where, params = list_filter(None, within=within, community_id=community_id)
    query = sql.SQL(_TEAM + " WHERE {} ORDER BY id LIMIT %s").format(where)
    rows = conn.execute(query, [*params, limit]).fetchall()
    return [_team(conn, r, now) for r in rows]


def get_team(conn: Conn, team_id: str, now: datetime) -> TeamRecord | None:
    row = conn.execute((_TEAM + " WHERE id = %s").encode(), (team_id,)).fetchone()
    return None if row is None else _team(conn, row, now)


def create_team(
    conn: Conn,
    team_id: str,
    community_id: str,
    building_id: str | None,
    name: str,
    kind: str,
    leader_id: str | None,
    now: datetime,
) -> TeamRecord | None:
    """The new team, or None when the id is taken."""
    row = conn.execute(
        "INSERT INTO teams (id, community_id, building_id, name, kind, leader_id)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
        " RETURNING id, community_id, building_id, name, kind, leader_id",
        (team_id, community_id, building_id, name, kind, leader_id),
    ).fetchone()
    return None if row is None else _team(conn, row, now)


def add_shifts(
    conn: Conn,
    team: TeamRecord,
    responder_id: str,
    weekdays: Iterable[int],
    starts: time,
    ends: time,
) -> None:
    """Put the responder on the team's roster on these weekdays (local wall clock)."""
    for weekday in sorted(set(weekdays)):
        conn.execute(
            "INSERT INTO shifts (community_id, team_id, responder_id, weekday, starts, ends)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (team.community_id, team.id, responder_id, weekday, starts, ends),
        )


def duty_board(conn: Conn, community_id: str, now: datetime) -> DutyBoard:
    """Each team of the community with who is on duty now, and its responders."""
    teams = list_teams(conn, within=None, community_id=community_id, now=now, limit=None)
    people = list_responders(conn, within=None, community_id=community_id, limit=None)
    return DutyBoard(community_id=community_id, as_of=now, teams=teams, responders=people)


# --- changes the CLI and a scenario's seeding make ------------------------------------------


def set_team_leader(conn: Conn, team_id: str, responder_id: str | None) -> bool:
    """False when there is no such team."""
    cur = conn.execute("UPDATE teams SET leader_id = %s WHERE id = %s", (responder_id, team_id))
    return cur.rowcount == 1


def set_responder_login(conn: Conn, responder_id: str, username: str, password_hash: str) -> bool:
    """The MQTT login of the responder's app (only the hash is stored); False when there
    is no such responder."""
    cur = conn.execute(
        "UPDATE responders SET mqtt_username = %s, mqtt_password_hash = %s WHERE id = %s",
        (username, password_hash, responder_id),
    )
    return cur.rowcount == 1
