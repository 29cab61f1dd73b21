"""Notifications and live rule changes against real servers: a local HTTP receiver, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from alerts.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSender, sign
from core.rules import parse_rule
from store import rules as rules_store
from tests.integration.alerts_support import (
    SOS,
    Clock,
    c1_listener,
    event,
    make_listener,
    reading,
    rows,
    setup_devices,
)
from tests.integration.support import Webhooks, webhook_receiver

pytestmark = pytest.mark.integration

SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture
def receiver() -> Iterator[Webhooks]:
    with webhook_receiver() as got:
        yield got


def _one_sos_for(url: str, webhook: str, *, min_severity: str = "info") -> None:
    """An SOS alert, written with its outbox row for the one webhook there is."""
    setup_devices(url, "c1", [("w1", "wearable", None)])
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO webhooks (url, secret, min_severity) VALUES (%s, %s, %s)",
            (webhook, SECRET, min_severity),
        )
    clock = Clock()
    listener = make_listener(url, clock, [SOS])
    listener.committed([event("w1", "sos_pressed", clock.now)])
    listener.stop()


def _sender(url: str, attempts: int, *, private: bool = True) -> WebhookSender:
    # The receiver listens on loopback: allowed here as the tests' settings allow it.
    return WebhookSender(
        url=url,
        attempts=attempts,
        backoff_min_s=0.001,
        backoff_max_s=0.001,
        timeout_s=5,
        private_destinations=private,
    )


def test_signed_webhooks_retry_with_backoff_then_deliver(
    fresh_database_url: str, receiver: Webhooks
) -> None:
    _one_sos_for(fresh_database_url, receiver.url, min_severity="major")
    receiver.failures = 2
    sender = _sender(fresh_database_url, attempts=5)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        for _ in range(3):
            assert sender.deliver_due(conn) == 1
            conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
        assert sender.deliver_due(conn) == 0
    assert rows(fresh_database_url, "SELECT state, attempts FROM webhook_deliveries") == [
        ("delivered", 3)
    ]
    headers, body = receiver.posts[-1]
    signature = headers[SIGNATURE_HEADER.lower()]
    assert signature == sign(SECRET, headers[TIMESTAMP_HEADER.lower()], body)
    assert b'"rule_id":"sos"' in body


def test_a_webhook_that_keeps_failing_ends_as_a_dead_letter(
    fresh_database_url: str, receiver: Webhooks
) -> None:
    _one_sos_for(fresh_database_url, receiver.url)
    receiver.failures = 100
    sender = _sender(fresh_database_url, attempts=3)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        for _ in range(3):
            sender.deliver_due(conn)
            conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    assert rows(
        fresh_database_url, "SELECT state, attempts, last_error FROM webhook_deliveries"
    ) == [("dead", 3, "HTTP 503")]


def test_the_sender_refuses_a_private_destination_unless_allowed(
    fresh_database_url: str, receiver: Webhooks
) -> None:
    """A webhook stored before the API checked destinations (or a name that resolves
    elsewhere since) is refused again at sending: nothing reaches the receiver."""
    _one_sos_for(fresh_database_url, receiver.url)
    sender = _sender(fresh_database_url, attempts=1, private=False)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        assert sender.deliver_due(conn) == 1
    [(state, error)] = rows(fresh_database_url, "SELECT state, last_error FROM webhook_deliveries")
    assert state == "dead"
    assert error.startswith("refused: 127.0.0.1 is not a public address")
    assert receiver.posts == []


def test_a_rule_change_takes_effect_without_a_restart(fresh_database_url: str) -> None:
    rule = {
        "id": "spo2",
        "type": "threshold",
        "title": "SpO2 low",
        "severity": "major",
        "metric": "spo2",
        "op": "<",
        "raise": 90,
    }
    clock, listener = c1_listener(fresh_database_url, [rule])
    try:
        listener.committed([reading("w1", "spo2", clock.now, 91)])
        assert rows(fresh_database_url, "SELECT count(*) FROM alerts") == [(0,)]
        with psycopg.connect(fresh_database_url) as conn:
            rules_store.upsert_rules(conn, [parse_rule({**rule, "raise": 92})], "api")
        listener.tick(clock.advance(1))  # the engine sees the new revision
        listener.committed([reading("w1", "spo2", clock.at(60), 91)])
        assert rows(fresh_database_url, "SELECT rule_id FROM alerts") == [("spo2",)]
        with psycopg.connect(fresh_database_url) as conn:
            rules_store.set_enabled(conn, "spo2", False)
        listener.tick(clock.advance(1))
        assert listener.engine.evaluators == {}
    finally:
        listener.stop()


OFFLINE = {
    "id": "offline",
    "type": "absence",
    "title": "Offline",
    "severity": "minor",
    "intervals": 3,
    "min_clears": 2,
}


def test_absence_raises_offline_and_a_reconnect_clears_it_once(fresh_database_url: str) -> None:
    clock, listener = c1_listener(fresh_database_url, [OFFLINE], [("d1", "access", None)])
    try:
        listener.committed([reading("d1", "battery", clock.now, 90, "access")])
        listener.tick(clock.advance(179))
        assert rows(fresh_database_url, "SELECT count(*) FROM alerts") == [(0,)]
        listener.tick(clock.advance(2))
        assert rows(fresh_database_url, "SELECT state FROM alerts") == [("open",)]
        listener.committed([reading("d1", "battery", clock.advance(10), 90, "access")])
        listener.tick(clock.advance(1))
        assert rows(fresh_database_url, "SELECT state FROM alerts") == [("open",)]  # not yet
        listener.committed([reading("d1", "battery", clock.advance(50), 90, "access")])
    finally:
        listener.stop()
    assert rows(fresh_database_url, "SELECT state, resolved_by FROM alerts") == [
        ("resolved", "engine")
    ]
