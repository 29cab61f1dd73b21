"""Replaying dead letters through the pipeline's own path, after a fix.

Selected dead letters go through the same steps as a message from the broker
(topic, registry, decode with the limits, the writer with its bisection), with
the time they were first received. Each replay's result is recorded in
``dead_letter_replays`` (through ``store.dead_letters``); the dead letter itself
is kept. The running rule engine reads the ``stored`` results past its cursor and
evaluates them as any committed message (``alerts.listener.AlertListener._evaluate_replays``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg

from core.decode import Limits
from core.directory import DeviceDirectory
from core.errors import RejectedMessage
from gateway.boundary import internal_error
from gateway.decoders import Decoders
from gateway.pipeline import accept
from ingest.batch import Batch
from ingest.writer import BatchWriter
from store import dead_letters, device_directory

__all__ = ["ReplayResult", "Selection", "replay"]


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
            # A selection's fields are the store's filters, by name.
            rows = dead_letters.replay_candidates(conn, **asdict(selection))
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
                    dead_letters.record_replay(
                        conn, result.dead_letter_id, result.outcome, result.reason, result.detail
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
