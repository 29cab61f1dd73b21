"""Telling the world: MQTT alert topics and signed webhooks.

- MQTT: ``community/{id}/alerts/{severity}``, QoS 1, from a client of its own
  (not the pipeline's manually-acked subscriber: publishing must never
  interfere with its ack bookkeeping). paho queues while disconnected.
- Webhooks: the alert transaction writes an outbox row per webhook
  (``webhook_deliveries``), so nothing is lost between commit and send. A
  sender thread posts each with an HMAC-SHA256 signature, retries with
  exponential backoff and jitter, and after ``attempts`` failures leaves it
  in state ``dead``: the dead letter an operator can list and replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from alerts.store import Notice
from alerts.worker import PoolWorker
from core.settings import AlertSettings
from core.topics import alert_topic
from core.webhook_targets import private_destination
from store import webhooks as webhooks_store

__all__ = [
    "SIGNATURE_HEADER",
    "MqttAlertPublisher",
    "WebhookSender",
    "post_signed",
    "sign",
]

_LOG = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-SC-Signature"
TIMESTAMP_HEADER = "X-SC-Timestamp"
DELIVERY_HEADER = "X-SC-Delivery"
# Deliveries claimed per round; each is one HTTP request.
_CLAIM = 20
# Without a wake-up, the sender looks for due retries this often.
_POLL_S = 1.0
# paho keeps at most this many unsent alerts while the broker is away.
_MAX_QUEUED = 10_000


def _addresses(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


class _Refuse(urllib.request.HTTPRedirectHandler):
    """A redirect could lead anywhere, a private address included: not followed."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class MqttAlertPublisher:
    def __init__(self, *, host: str, port: int, username: str | None, password: str | None,
                 client_id: str) -> None:  # fmt: skip
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
        )
        if username:
            self._client.username_pw_set(username, password)
        self._client.max_queued_messages_set(_MAX_QUEUED)
        self._client.reconnect_delay_set(1, 30)
        self._host, self._port = host, port

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def network_alive(self) -> bool:
        """paho's network thread runs (watched by the pipeline's supervisor)."""
        thread = getattr(self._client, "_thread", None)
        return thread is not None and thread.is_alive()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, notices: list[Notice]) -> None:
        for notice in notices:
            if not notice.notify:
                continue
            alert = notice.alert
            topic = alert_topic(alert["community_id"], alert["severity"])
            body = json.dumps(notice.payload(), default=str, separators=(",", ":"))
            self._client.publish(topic, body, qos=1)


class WebhookSender(PoolWorker):
    """Delivers the outbox; one thread, a connection pool of its own (``store.pools``)."""

    THREAD = POOL = "webhooks"
    LABEL = "webhook sender"

    def __init__(
        self,
        *,
        url: str,
        attempts: int,
        backoff_min_s: float,
        backoff_max_s: float,
        timeout_s: float,
        private_destinations: bool = False,
    ) -> None:
        self.url = url
        # Loopback, private and link-local receivers: only when the settings allow.
        self.private_destinations = private_destinations
        self.attempts = attempts
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        super().__init__(url, interval_s=_POLL_S, join_s=timeout_s + 5)

    @classmethod
    def from_settings(cls, url: str, settings: AlertSettings) -> WebhookSender:
        return cls(
            url=url,
            attempts=settings.webhook_attempts,
            backoff_min_s=settings.webhook_backoff_min_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            timeout_s=settings.webhook_timeout_s,
            private_destinations=settings.webhook_private_destinations,
        )

    def work(self, conn: psycopg.Connection[Any]) -> None:
        while self.deliver_due(conn) and not self._stop.is_set():
            pass

    def deliver_due(self, conn: psycopg.Connection[Any]) -> int:
        """Send what is due now; return how many were tried."""
        with conn.transaction():
            due = webhooks_store.claim_due(conn, _CLAIM)
            for delivery in due:
                error = self._post(delivery.id, delivery.url, delivery.secret, delivery.payload)
                attempts = delivery.attempts + 1
                if error is None:
                    webhooks_store.delivered(conn, delivery.id, attempts)
                elif attempts >= self.attempts:
                    _LOG.warning(
                        "webhook %s dead after %d attempts: %s", delivery.url, attempts, error
                    )
                    webhooks_store.dead(conn, delivery.id, attempts, error)
                else:
                    delay = min(self.backoff_max_s, self.backoff_min_s * 2 ** (attempts - 1))
                    delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
                    webhooks_store.retry_later(conn, delivery.id, attempts, error, delay)
        return len(due)

    def _post(self, delivery_id: int, url: str, secret: str, payload: Any) -> str | None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return post_signed(
            url,
            secret,
            body,
            delivery=str(delivery_id),
            timeout_s=self.timeout_s,
            private_destinations=self.private_destinations,
        )


def post_signed(
    url: str,
    secret: str,
    body: bytes,
    *,
    delivery: str,
    timeout_s: float,
    private_destinations: bool,
) -> str | None:
    """POST ``body`` signed with ``secret``: None when answered 2xx, otherwise why not.

    One sender for alert webhooks and the incident desk's gateway posts, so both
    refuse private destinations (unless allowed) and follow no redirect alike.
    """
    if not private_destinations:
        reason = private_destination(url, _addresses)
        if reason is not None:
            return f"refused: {reason}"
    timestamp = str(int(time.time()))
    request = urllib.request.Request(  # noqa: S310 - http(s) URLs validated by the API
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            DELIVERY_HEADER: delivery,
        },
    )
    try:
        with _NO_REDIRECTS.open(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)[:300]
    return None if 200 <= status < 300 else f"HTTP {status}"
