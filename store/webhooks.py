"""Webhooks an operator registers, and their deliveries as the API shows them.

The engine queues deliveries with the alert (``alerts/store.py``) and the sender
works them off (``alerts/notify.py``); here are the operator's side: register,
list, delete, and send a dead delivery again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from store.rows import Conn, first_record, records
from store.scoping import Communities, community_filter, given

__all__ = [
    "DeliveryRecord",
    "DueDelivery",
    "WebhookRecord",
    "any_enabled",
    "claim_due",
    "create_webhook",
    "dead",
    "delete_webhook",
    "delivered",
    "list_deliveries",
    "list_webhooks",
    "queue_deliveries",
    "retry_delivery",
    "retry_later",
]


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: int
    url: str
    community_id: str | None
    min_severity: str
    enabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    webhook_id: int
    alert_id: int
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


_WEBHOOK = "id, url, community_id, min_severity, enabled, created_at"
_DELIVERY = (
    "id, webhook_id, alert_id, state, attempts, next_attempt_at, last_error, created_at,"
    " delivered_at"
)


def create_webhook(
    conn: Conn, *, url: str, secret: str, community_id: str | None, min_severity: str
) -> WebhookRecord:
    with conn.cursor(row_factory=class_row(WebhookRecord)) as cur:
        row = cur.execute(
            "INSERT INTO webhooks (url, secret, community_id, min_severity) VALUES (%s, %s, %s, %s)"  # noqa: S608 - constant columns, values are parameters
            f" RETURNING {_WEBHOOK}",
            (url, secret, community_id, min_severity),
        ).fetchone()
    assert row is not None
    return row


def list_webhooks(conn: Conn, communities: Communities) -> list[WebhookRecord]:
    """Webhooks of ``communities`` (global ones only when ``communities`` is None)."""
    scope, params = community_filter(communities)
    return records(
        conn,
        WebhookRecord,
        f"SELECT {_WEBHOOK} FROM webhooks WHERE {scope} ORDER BY id",  # noqa: S608
        params,
    )


_OUTBOX = """
INSERT INTO webhook_deliveries (webhook_id, alert_id, payload)
SELECT w.id, %(alert_id)s, %(payload)s FROM webhooks AS w
 WHERE w.enabled AND (w.community_id IS NULL OR w.community_id = %(community_id)s)
   AND array_position(ARRAY['info','warning','minor','major','critical'], w.min_severity)
       <= array_position(ARRAY['info','warning','minor','major','critical'], %(severity)s)
"""


def queue_deliveries(
    conn: Conn, alert_id: int, payload: Any, community_id: str, severity: str
) -> None:
    """A delivery of ``payload`` for every enabled webhook that wants this alert (its
    community or every community, at or above its minimum severity): the outbox,
    written in the alert's own transaction."""
    conn.execute(
        _OUTBOX,
        {
            "alert_id": alert_id,
            "payload": Jsonb(payload),
            "community_id": community_id,
            "severity": severity,
        },
    )


def any_enabled(conn: Conn) -> bool:
    """Whether an alert would be queued for any webhook at all."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled)").fetchone()
    return bool(row and row[0])


def delete_webhook(conn: Conn, webhook_id: int) -> bool:
    return conn.execute("DELETE FROM webhooks WHERE id = %s", (webhook_id,)).rowcount == 1


def list_deliveries(
    conn: Conn,
    communities: Communities,
    *,
    state: str | None = None,
    webhook_id: int | None = None,
    limit: int = 500,
) -> list[DeliveryRecord]:
    """Deliveries of the webhooks ``list_webhooks`` shows, newest first."""
    scope, params = community_filter(communities)
    terms, values = given((("state = %s", state), ("webhook_id = %s", webhook_id)))
    where = [f"webhook_id IN (SELECT id FROM webhooks WHERE {scope})", *terms]  # noqa: S608 - constant fragments
    params += values
    return records(
        conn,
        DeliveryRecord,
        f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY id DESC LIMIT %s",
        [*params, limit],
    )


def retry_delivery(conn: Conn, delivery_id: int) -> DeliveryRecord | None:
    """A dead delivery back to pending, attempts from zero; None if it is not dead."""
    return first_record(
        conn,
        DeliveryRecord,
        "UPDATE webhook_deliveries SET state = 'pending', attempts = 0,"  # noqa: S608 - constant columns, values are parameters
        " next_attempt_at = now() WHERE id = %s AND state = 'dead'"
        f" RETURNING {_DELIVERY}",
        (delivery_id,),
    )


# --- the sender's side (alerts/notify.py) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class DueDelivery:
    id: int
    payload: Any
    attempts: int
    url: str
    secret: str


def claim_due(conn: Conn, limit: int) -> list[DueDelivery]:
    """Pending deliveries due now, locked for this transaction (other senders skip them)."""
    rows = conn.execute(
        "SELECT d.id, d.payload, d.attempts, w.url, w.secret FROM webhook_deliveries d"
        " JOIN webhooks w ON w.id = d.webhook_id"
        " WHERE d.state = 'pending' AND d.next_attempt_at <= now()"
        " ORDER BY d.next_attempt_at LIMIT %s FOR UPDATE OF d SKIP LOCKED",
        (limit,),
    ).fetchall()
    return [DueDelivery(int(i), p, int(a), str(u), str(s)) for i, p, a, u, s in rows]


def delivered(conn: Conn, delivery_id: int, attempts: int) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET state = 'delivered', attempts = %s,"
        " delivered_at = now(), last_error = NULL WHERE id = %s",
        (attempts, delivery_id),
    )


def dead(conn: Conn, delivery_id: int, attempts: int, error: str) -> None:
    """Given up: listed as dead until an operator retries it."""
    conn.execute(
        "UPDATE webhook_deliveries SET state = 'dead', attempts = %s, last_error = %s"
        " WHERE id = %s",
        (attempts, error, delivery_id),
    )


def retry_later(conn: Conn, delivery_id: int, attempts: int, error: str, delay_s: float) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET attempts = %s, last_error = %s,"
        " next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s",
        (attempts, error, delay_s, delivery_id),
    )
