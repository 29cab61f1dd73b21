"""What the alert engine saves and reloads between runs.

The one writer of ``alert_engine_progress`` (each worker's watermark and replay
cursor); beside it the reads the engine makes when it starts: its saved rule state
(written by ``store/rules.py``) and the alerts still active.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from store.rows import Conn

__all__ = [
    "active_alerts",
    "load_state",
    "progress_of",
    "save_replay_cursor",
    "save_watermark",
]


# -- the engine's progress ----------------------------------------------------------------


def save_watermark(conn: Conn, worker: str, watermark: datetime) -> None:
    conn.execute(
        "INSERT INTO alert_engine_progress (worker, watermark) VALUES (%s, %s)"
        " ON CONFLICT (worker) DO UPDATE"
        " SET watermark = greatest(alert_engine_progress.watermark, excluded.watermark),"
        " updated_at = now()",
        (worker, watermark),
    )


def save_replay_cursor(conn: Conn, worker: str, cursor: int) -> None:
    conn.execute(
        "INSERT INTO alert_engine_progress (worker, watermark, replay_cursor)"
        " VALUES (%s, now(), %s) ON CONFLICT (worker) DO UPDATE"
        " SET replay_cursor = greatest(alert_engine_progress.replay_cursor,"
        " excluded.replay_cursor), updated_at = now()",
        (worker, cursor),
    )


def progress_of(conn: Conn, worker: str) -> tuple[datetime | None, int | None] | None:
    """(watermark, replay cursor) saved by ``worker``; None if it saved nothing."""
    row = conn.execute(
        "SELECT watermark, replay_cursor FROM alert_engine_progress WHERE worker = %s",
        (worker,),
    ).fetchone()
    return None if row is None else (row[0], None if row[1] is None else int(row[1]))


# -- what the engine reloads --------------------------------------------------------------


def load_state(conn: Conn) -> list[tuple[str, str, dict[str, Any]]]:
    """The engine's saved per-(rule, subject) state."""
    with conn.transaction():
        return [
            (str(r), str(s), dict(d))
            for r, s, d in conn.execute("SELECT rule_id, subject, state FROM alert_rule_state")
        ]


def active_alerts(conn: Conn) -> list[tuple[str, str, float]]:
    """(rule, subject, first seen) of every alert not resolved."""
    with conn.transaction():
        return [
            (str(r), str(s), float(t))
            for r, s, t in conn.execute(
                "SELECT rule_id, subject, extract(epoch FROM first_seen)::float8 FROM alerts"
                " WHERE state <> 'resolved'"
            )
        ]
