"""The dead letters: the one insert of ``dead_letters``, and their reads (the API's
and the CLI's list) and those of their replays (what the rule engine evaluates after
a replay stored them).

``insert_dead_letters`` runs on the caller's connection or cursor, inside its
transaction: the pipeline's batch (``ingest/writer.py``), the incident desk's
refused replies (``alerts/incident_desk.py``); the fire bridge's refusals
(``firebridge/store.py``) go through ``insert_dead_letters_async``. A replay
(``gateway/replay.py``) selects them with ``replay_candidates`` and records each
result in ``dead_letter_replays`` with ``record_replay``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from store.rows import Conn, records
from store.scoping import Communities, scoped

__all__ = [
    "DeadLetterRecord",
    "NewDeadLetter",
    "insert_dead_letters",
    "insert_dead_letters_async",
    "list_dead_letters",
    "record_replay",
    "replay_candidates",
    "replayed_since",
    "replays_end",
]


_INSERT = (
    "INSERT INTO dead_letters (received_at, topic, payload, payload_size, reason, detail, worker)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class NewDeadLetter:
    """A dead letter as it is stored: the caller decides how much of the payload to
    keep (``payload_size``: the real size beside it) and makes the text storable."""

    received_at: datetime
    topic: str
    payload: bytes
    payload_size: int | None
    reason: str
    detail: str
    worker: str


def _rows(letters: Sequence[NewDeadLetter]) -> list[tuple[Any, ...]]:
    return [
        (d.received_at, d.topic, d.payload, d.payload_size, d.reason, d.detail, d.worker)
        for d in letters
    ]


def insert_dead_letters(on: Conn | psycopg.Cursor[Any], letters: Sequence[NewDeadLetter]) -> None:
    """Insert ``letters`` on ``on`` (a connection, or a cursor of it), in whatever
    transaction it is in; one ``executemany``."""
    if not letters:
        return
    if isinstance(on, psycopg.Connection):
        with on.cursor() as cur:
            cur.executemany(_INSERT, _rows(letters))
    else:
        on.executemany(_INSERT, _rows(letters))


async def insert_dead_letters_async(
    cur: psycopg.AsyncCursor[Any], letters: Sequence[NewDeadLetter]
) -> None:
    """``insert_dead_letters`` on an asyncio cursor (the fire bridge's)."""
    if letters:
        await cur.executemany(_INSERT, _rows(letters))


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    id: int
    received_at: datetime
    topic: str
    payload: bytes
    reason: str
    detail: str
    worker: str
    payload_size: int | None  # set when the payload was kept truncated: its real size
    replayed_at: datetime | None  # the newest replay, if any
    replay_outcome: str | None
    replay_reason: str | None

    @property
    def size(self) -> int:
        """The payload's size as received."""
        return len(self.payload) if self.payload_size is None else self.payload_size

    @property
    def truncated(self) -> bool:
        return self.payload_size is not None


# (received_at, id) descending: received_at is indexed; id breaks ties within a batch.
# The device is the topic's fourth level (indexed as such).
_LIST = sql.SQL(
    "SELECT d.id, d.received_at, d.topic, d.payload, d.reason, d.detail, d.worker,"
    " d.payload_size, r.replayed_at, r.outcome AS replay_outcome, r.reason AS replay_reason"
    " FROM dead_letters AS d"
    " LEFT JOIN LATERAL (SELECT replayed_at, outcome, reason FROM dead_letter_replays"
    "  WHERE dead_letter_id = d.id ORDER BY replayed_at DESC, id DESC LIMIT 1) AS r ON true"
    " WHERE true{} ORDER BY d.received_at DESC, d.id DESC LIMIT %s"
)


def list_dead_letters(
    conn: Conn,
    communities: Communities,
    *,
    limit: int,
    reason: str | None = None,
    device: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: tuple[datetime, int] | None = None,
) -> list[DeadLetterRecord]:
    """Refused messages, newest first; ``before`` is the (received_at, id) of the last
    one of the previous page. The community is the topic's second level: a topic
    without one is seen only when ``communities`` is None (every community)."""
    where, params = scoped(
        communities,
        (
            ("d.reason = %s", reason),
            ("split_part(d.topic, '/', 4) = %s", device),
            ("d.received_at >= %s", since),
            ("d.received_at < %s", until),
        ),
        "split_part(d.topic, '/', 2)",
    )
    if before is not None:
        where.append("(d.received_at, d.id) < (%s, %s)")
        params += list(before)
    terms = sql.SQL("".join(f" AND {term}" for term in where))  # constant terms
    return records(conn, DeadLetterRecord, _LIST.format(terms), [*params, limit])


def replays_end(conn: Conn) -> int:
    """The newest replay so far (0 for none): where a worker seeing replays first begins."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM dead_letter_replays").fetchone()
    return int(row[0]) if row is not None else 0


def replayed_since(conn: Conn, cursor: int, limit: int) -> list[tuple[int, str, bytes, datetime]]:
    """Dead letters replayed into storage after ``cursor``: (replay id, topic, payload,
    first received), oldest replay first."""
    rows = conn.execute(
        "SELECT r.id, d.topic, d.payload, d.received_at FROM dead_letter_replays AS r"
        " JOIN dead_letters AS d ON d.id = r.dead_letter_id"
        " WHERE r.id > %s AND r.outcome = 'stored' ORDER BY r.id LIMIT %s",
        (cursor, limit),
    ).fetchall()
    return [(int(i), str(t), bytes(p), at) for i, t, p, at in rows]


# --- replays --------------------------------------------------------------------------------

# Dead letters whose content is already stored are skipped unless asked otherwise.
_DONE = (
    " AND NOT EXISTS (SELECT 1 FROM dead_letter_replays AS r"
    " WHERE r.dead_letter_id = d.id AND r.outcome IN ('stored', 'duplicate'))"
)
_CANDIDATES = sql.SQL(
    "SELECT d.id, d.received_at, d.topic, d.payload, d.payload_size FROM dead_letters AS d"
    " WHERE true{} ORDER BY d.id LIMIT %s"
)
_RECORD = (
    "INSERT INTO dead_letter_replays (dead_letter_id, outcome, reason, detail)"
    " VALUES (%s, %s, %s, %s)"
)


def replay_candidates(
    conn: Conn,
    *,
    reason: str | None,
    device: str | None,
    since: datetime | None,
    until: datetime | None,
    again: bool,
    limit: int,
) -> list[tuple[Any, ...]]:
    """The dead letters to replay, oldest first: (id, received_at, topic, payload,
    payload_size). Those already replayed into storage only when ``again``."""
    terms: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("d.reason = %s", reason),
        ("split_part(d.topic, '/', 4) = %s", device),
        ("d.received_at >= %s", since),
        ("d.received_at < %s", until),
    ):
        if value is not None:
            terms.append(sql.SQL(" AND " + column))
            params.append(value)
    if not again:
        terms.append(sql.SQL(_DONE))
    return conn.execute(_CANDIDATES.format(sql.Composed(terms)), [*params, limit]).fetchall()


def record_replay(
    conn: Conn, dead_letter_id: int, outcome: str, reason: str | None, detail: str
) -> None:
    """One replay's result, on the caller's connection and in its transaction."""
    conn.execute(_RECORD, (dead_letter_id, outcome, reason, detail))
