"""Replaying dead letters through the pipeline's own path, after a fix.

Selected dead letters go through the same steps as a message from the broker
(topic, registry, decode with the limits, the writer with its bisection), with
the time they were first received. Each replay's result is recorded in
``dead_letter_replays``; the dead letter itself is kept. The running rule
engine reads the ``stored`` results past its cursor and evaluates them as any
committed message (``alerts.listener.AlertListener._evaluate_replays``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from core.decode import Limits
from core.directory import DeviceDirectory
from core.errors import RejectedMessage
from gateway.boundary import internal_error
from gateway.decoders import Decoders
from gateway.pipeline import accept
from ingest.batch import Batch
from ingest.writer import BatchWriter
from store import device_directory

__all__ = ["ReplayResult", "Selection", "replay"]

# Dead letters whose content is already stored are skipped unless asked otherwise.
_DONE = (
    " AND NOT EXISTS (SELECT 1 FROM dead_letter_replays AS r"
    " WHERE r.dead_letter_id = d.id AND r.outcome IN ('stored', 'duplicate'))"
)
_SELECT = sql.SQL(
    "SELECT d.id, d.received_at, d.topic, d.payload, d.payload_size FROM dead_letters AS d"
    " WHERE true{} ORDER BY d.id LIMIT %s"
)
_RECORD = (
    "INSERT INTO dead_letter_replays (dead_letter_id, outcome, reason, detail)"
    " VALUES (%s, %s, %s, %s)"
)


@dataclass(frozen=True, slots=True)
class Selection:
    reason: str | None = None
    device: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1_000
    again: bool = False  # also those already replayed into storage


@dataclass(frozen=True, slots=True)
class ReplayResult:
    dead_letter_id: int
    topic: str
    outcome: str  # stored, duplicate, rejected, truncated (accepted: a dry run)
    reason: str | None
    detail: str


def _where(selection: Selection) -> tuple[sql.Composable, list[Any]]:
    terms: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("d.reason = %s", selection.reason),
        ("split_part(d.topic, '/', 4) = %s", selection.device),
        ("d.received_at >= %s", selection.since),
        ("d.received_at < %s", selection.until),
    ):
        if value is not None:
            terms.append(sql.SQL(" AND " + column))
            params.append(value)
    if not selection.again:
        terms.append(sql.SQL(_DONE))
    return sql.Composed(terms), params


def replay(
    url: str,
    selection: Selection,
    *,
    limits: Limits,
    worker: str,
    dry_run: bool = False,
    progress: Callable[[ReplayResult], None] | None = None,
    decoders: Decoders | None = None,
) -> list[ReplayResult]:
    """Replay the selected dead letters (oldest first); record and return each result."""
    results: list[ReplayResult] = []
    writer = BatchWriter(url=url, worker=worker, store_refused=False)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            where, params = _where(selection)
            rows = conn.execute(_SELECT.format(where), [*params, selection.limit]).fetchall()
            registry = DeviceDirectory(
                load_all=lambda: device_directory.load_all(conn), miss_refresh_s=0
            )
            registry.refresh()
            for id_, received_at, topic, payload, payload_size in rows:
                result = _replay_one(
                    int(id_),
                    received_at,
                    topic,
                    bytes(payload),
                    payload_size,
                    registry=registry,
                    limits=limits,
                    writer=writer,
                    dry_run=dry_run,
                    decoders=decoders,
                )
                if not dry_run:
                    conn.execute(
                        _RECORD,
                        (result.dead_letter_id, result.outcome, result.reason, result.detail),
                    )
                results.append(result)
                if progress is not None:
                    progress(result)
    finally:
        writer.close()
    return results


def _replay_one(
    id_: int,
    received_at: datetime,
    topic: str,
    payload: bytes,
    payload_size: int | None,
    *,
    registry: DeviceDirectory,
    limits: Limits,
    writer: BatchWriter,
    dry_run: bool,
    decoders: Decoders | None = None,
) -> ReplayResult:
    if payload_size is not None:
        detail = f"only {len(payload)} of {payload_size} bytes were kept"
        return ReplayResult(id_, topic, "truncated", None, detail)
    try:
        accepted = accept(topic, payload, received_at, registry, limits, decoders)
    except RejectedMessage as exc:
        return ReplayResult(id_, topic, "rejected", exc.reason.value, exc.detail)
    except Exception as exc:  # noqa: BLE001 - the per-message boundary, as in the pipeline
        dead = internal_error(topic, payload, received_at, exc, "replay")
        return ReplayResult(id_, topic, "rejected", dead.reason, dead.detail)
    if dry_run:
        return ReplayResult(id_, topic, "accepted", None, "dry run: nothing written")
    written = writer.write(Batch(accepted=[accepted]))
    if written.dead_letters:
        refused = written.dead_letters[0]
        return ReplayResult(id_, topic, "rejected", refused.reason, refused.detail)
    new = written.rows_written + written.events_written
    if new == 0 and (accepted.readings or accepted.event is not None):
        return ReplayResult(id_, topic, "duplicate", None, "already stored")
    return ReplayResult(id_, topic, "stored", None, f"{new} row(s) written")
