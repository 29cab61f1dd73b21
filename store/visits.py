"""Care visits: recording them, importing device check-ins, a resident's visit policy,
and the reads behind the month's coverage (API, CLI, the visit check of the engine).

Device check-ins become visits by ``import_checkins``: an access-class device (the
tag at the resident's door) publishes the event ``visit_checkin`` with
``{"worker": ..., "resident": ..., "outcome"?: ..., "notes"?: ...}``; the pipeline
stores it in ``device_events`` like any event, and this statement copies new ones
into ``visits``. Its natural key (device, device time) makes running it twice, or
from two processes at once, harmless. A check-in naming no resident of the
device's community stays a device event only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from psycopg.rows import class_row

from core.visits import FOLLOW_UP_DAYS, Coverage, Month, Outcome, Policy, Visit, coverage
from store.places import set_visit_deadline_day
from store.residents import set_visit_policy
from store.rows import Conn, records, scalar
from store.scoping import Communities, scoped

__all__ = [
    "CHECKIN_EVENT",
    "IMPORT_CHECKINS",
    "CommunityCoverage",
    "VisitRecord",
    "alert_resident",
    "communities_in_programme",
    "community_coverage",
    "community_time_zone",
    "delete_simulated",
    "follow_ups",
    "import_checkins",
    "list_visits",
    "open_follow_ups",
    "recent_visits",
    "record_visit",
    "resident_community",
    "set_deadline_day",
    "set_policy",
    "visit_alerts",
]

CHECKIN_EVENT = "visit_checkin"
# Events commit in batches whose received_at can interleave: re-read this far back.
IMPORT_OVERLAP = "10 minutes"

IMPORT_CHECKINS = f"""
WITH since AS (
    SELECT coalesce(max(source_received_at) - interval '{IMPORT_OVERLAP}', '-infinity') AS t
      FROM visits WHERE source = 'device'
), new AS (
    SELECT d.community_id, r.id AS resident_id, left(e.data->>'worker', 64) AS worker,
           e.ts, e.device_id, e.received_at, left(coalesce(e.data->>'notes', ''), 2000) AS notes,
           CASE WHEN e.data->>'outcome' IN ('well', 'needs_follow_up', 'not_at_home')
                THEN e.data->>'outcome' ELSE 'well' END AS outcome,
           c.time_zone
      FROM device_events AS e
      JOIN devices AS d ON d.id = e.device_id
      JOIN residents AS r ON r.id = e.data->>'resident' AND r.community_id = d.community_id
      JOIN communities AS c ON c.id = d.community_id
     WHERE e.event = '{CHECKIN_EVENT}' AND e.received_at >= (SELECT t FROM since)
       AND coalesce(e.data->>'worker', '') <> ''
)
INSERT INTO visits (community_id, resident_id, worker, started_at, outcome, notes, source,
                    source_device, source_ts, source_received_at, follow_up_due)
SELECT community_id, resident_id, worker, ts, outcome, notes, 'device', device_id, ts,
       received_at,
       CASE WHEN outcome = 'needs_follow_up'
            THEN (ts AT TIME ZONE time_zone)::date + 7 END
  FROM new ORDER BY ts
ON CONFLICT (source_device, source_ts) WHERE source_device IS NOT NULL DO NOTHING
"""  # noqa: S608 - constants only


@dataclass(frozen=True, slots=True)
class VisitRecord:
    id: int
    community_id: str
    resident_id: str
    worker: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    notes: str
    source: str
    follow_up_due: date | None
    follow_up_done_at: datetime | None


_COLUMNS = (
    "id, community_id, resident_id, worker, started_at, ended_at, outcome, notes, source,"
    " follow_up_due, follow_up_done_at"
)


def import_checkins(conn: Conn) -> int:
    """Copy new ``visit_checkin`` device events into visits; how many were new."""
    cur = conn.execute(IMPORT_CHECKINS.encode())
    return max(cur.rowcount, 0)


def resident_community(conn: Conn, resident_id: str) -> tuple[str, str] | None:
    """(community id, its time zone) of a resident, or None."""
    return conn.execute(
        "SELECT r.community_id, c.time_zone FROM residents AS r"
        " JOIN communities AS c ON c.id = r.community_id WHERE r.id = %s",
        (resident_id,),
    ).fetchone()


def record_visit(
    conn: Conn,
    community_id: str,
    time_zone: str,
    *,
    resident_id: str,
    worker: str,
    started_at: datetime,
    ended_at: datetime | None = None,
    outcome: Outcome,
    notes: str = "",
    follow_up_due: date | None = None,
    source: str,
) -> VisitRecord:
    """Record a visit; ``needs_follow_up`` opens a follow-up task, due FOLLOW_UP_DAYS
    after the visit's day in the community's zone unless ``follow_up_due`` says when."""
    due = follow_up_due
    if outcome is Outcome.NEEDS_FOLLOW_UP and due is None:
        due = started_at.astimezone(ZoneInfo(time_zone)).date() + timedelta(days=FOLLOW_UP_DAYS)
    if outcome is not Outcome.NEEDS_FOLLOW_UP:
        due = None
    with conn.cursor(row_factory=class_row(VisitRecord)) as cur:
        row = cur.execute(
            "INSERT INTO visits (community_id, resident_id, worker, started_at, ended_at, outcome,"  # noqa: S608 - constant column list
            " notes, source, follow_up_due) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {_COLUMNS}",
            (
                community_id,
                resident_id,
                worker,
                started_at,
                ended_at,
                outcome.value,
                notes,
                source,
                due,
            ),
        ).fetchone()
    assert row is not None
    return row


def set_policy(conn: Conn, resident_id: str, policy: Policy) -> None:
    """The resident's visit policy (written by ``store.residents``)."""
    set_visit_policy(conn, resident_id, policy)


def set_deadline_day(conn: Conn, community_id: str, day: int) -> bool:
    """The day of the month an unvisited resident raises an alert; False: no community.
    Written by ``store.places``, the writer of ``communities``."""
    return set_visit_deadline_day(conn, community_id, day)


def delete_simulated(conn: Conn, community_id: str, start: datetime, end: datetime) -> None:
    """Drop a simulated month's visits before it is simulated again."""
    conn.execute(
        "DELETE FROM visits WHERE community_id = %s AND source = 'simulator'"
        " AND started_at >= %s AND started_at < %s",
        (community_id, start, end),
    )


# --- lists ---------------------------------------------------------------------------------


def list_visits(
    conn: Conn,
    communities: Communities,
    *,
    limit: int,
    before_id: int | None = None,
    community_id: str | None = None,
    resident_id: str | None = None,
    month: Month | None = None,
) -> list[VisitRecord]:
    """Visits newest first (by id); ``month`` in each visit's community's zone."""
    where, params = scoped(
        communities,
        (
            ("v.id < %s", before_id),
            ("v.community_id = %s", community_id),
            ("v.resident_id = %s", resident_id),
        ),
        "v.community_id",
    )
    if month is not None:
        where.append(
            "v.started_at >= (%s::date::timestamp AT TIME ZONE c.time_zone)"
            " AND v.started_at < ((%s::date + interval '1 month')::timestamp"
            " AT TIME ZONE c.time_zone)"
        )
        first = f"{month}-01"
        params += [first, first]
    columns = ", ".join(f"v.{c.strip()}" for c in _COLUMNS.split(","))
    query = (
        f"SELECT {columns} FROM visits AS v JOIN communities AS c ON c.id = v.community_id"  # noqa: S608 - constant clauses, values are parameters
        f" WHERE {' AND '.join(where)} ORDER BY v.id DESC LIMIT %s"
    )
    return records(conn, VisitRecord, query.encode(), [*params, limit])


def follow_ups(
    conn: Conn, communities: Communities, *, community_id: str | None, limit: int
) -> list[VisitRecord]:
    """Open follow-up tasks, soonest due first."""
    where, params = scoped(communities, (("community_id = %s", community_id),))
    where += ["follow_up_due IS NOT NULL", "follow_up_done_at IS NULL"]
    query = (
        f"SELECT {_COLUMNS} FROM visits WHERE {' AND '.join(where)}"  # noqa: S608 - constant clauses
        " ORDER BY follow_up_due, id LIMIT %s"
    )
    return records(conn, VisitRecord, query.encode(), [*params, limit])


def alert_resident(conn: Conn, alert_id: int) -> tuple[str | None, str | None, str | None] | None:
    """(device id, resident id, resident name) behind an alert; None: no such alert."""
    return conn.execute(
        "SELECT a.device_id, r.id, r.name FROM alerts AS a"
        " LEFT JOIN devices AS d ON d.id = a.device_id"
        " LEFT JOIN residents AS r ON r.id = d.resident_id WHERE a.id = %s",
        (alert_id,),
    ).fetchone()


def recent_visits(conn: Conn, resident_id: str, limit: int) -> list[VisitRecord]:
    return records(
        conn,
        VisitRecord,
        f"SELECT {_COLUMNS} FROM visits WHERE resident_id = %s"  # noqa: S608 - constant column list
        " ORDER BY started_at DESC LIMIT %s",
        (resident_id, limit),
    )


def open_follow_ups(conn: Conn, resident_id: str) -> list[VisitRecord]:
    return records(
        conn,
        VisitRecord,
        f"SELECT {_COLUMNS} FROM visits WHERE resident_id = %s"  # noqa: S608 - constant column list
        " AND follow_up_due IS NOT NULL AND follow_up_done_at IS NULL"
        " ORDER BY follow_up_due",
        (resident_id,),
    )


# --- the month's coverage ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommunityCoverage:
    """A community's coverage of a month, plus what a list of people needs beside ids."""

    community_id: str
    time_zone: str
    deadline_day: int
    as_of: datetime
    coverage: Coverage
    people: dict[str, tuple[str, str | None, str | None]]  # id -> name, building, unit


def communities_in_programme(conn: Conn) -> list[tuple[str, str, int]]:
    """(id, time zone, deadline day) of every community with a resident under a policy."""
    rows = conn.execute(
        "SELECT c.id, c.time_zone, c.visit_deadline_day FROM communities AS c"
        " WHERE EXISTS (SELECT 1 FROM residents AS r WHERE r.community_id = c.id"
        " AND r.visit_policy <> 'none') ORDER BY c.id"
    ).fetchall()
    return [(str(c), str(tz), int(day)) for c, tz, day in rows]


def community_time_zone(conn: Conn, community_id: str) -> ZoneInfo | None:
    return scalar(
        conn, ZoneInfo, "SELECT time_zone FROM communities WHERE id = %s", (community_id,)
    )


def community_coverage(
    conn: Conn, community_id: str, month: Month | None, now: datetime
) -> CommunityCoverage | None:
    """The coverage of ``month`` (default: the month of ``now`` in the community's zone)
    as of ``now``, judged by ``core.visits``; None: no such community."""
    found = conn.execute(
        "SELECT time_zone, visit_deadline_day FROM communities WHERE id = %s", (community_id,)
    ).fetchone()
    if found is None:
        return None
    time_zone, deadline = str(found[0]), int(found[1])
    tz = ZoneInfo(time_zone)
    chosen = month or Month.of(now, tz)
    start, end = chosen.bounds(tz)
    people: dict[str, tuple[str, str | None, str | None]] = {}
    residents: list[tuple[str, Policy]] = []
    for rid, name, building, unit, policy in conn.execute(
        "SELECT id, name, building, unit, visit_policy FROM residents"
        " WHERE community_id = %s AND visit_policy <> 'none'",
        (community_id,),
    ):
        people[rid] = (name, building, unit)
        residents.append((rid, Policy(policy)))
    visits = [
        Visit(rid, started, Outcome(outcome))
        for rid, started, outcome in conn.execute(
            "SELECT resident_id, started_at, outcome FROM visits"
            " WHERE community_id = %s AND started_at >= %s AND started_at < %s",
            (community_id, start, end),
        )
    ]
    return CommunityCoverage(
        community_id=community_id,
        time_zone=time_zone,
        deadline_day=deadline,
        as_of=now,
        coverage=coverage(residents, visits, chosen, tz, now, deadline),
        people=people,
    )


def visit_alerts(
    conn: Conn, rule_id: str, community_id: str, month: Month
) -> list[tuple[str, str, bool]]:
    """(subject, severity, active) of every alert of the visit rule for ``month``."""
    rows = conn.execute(
        "SELECT subject, severity, state <> 'resolved' FROM alerts"
        " WHERE rule_id = %s AND community_id = %s AND subject LIKE %s",
        (rule_id, community_id, f"resident:%/{month}"),
    ).fetchall()
    return [(str(s), str(v), bool(a)) for s, v, a in rows]
