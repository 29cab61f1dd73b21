"""The incident desk: the pipeline's thread that turns alerts into people on site.

Every tick it groups new alerts into incidents and dispatches automatically
(``store.incidents.sync_alerts``), infers arrivals from badges and geofences,
escalates what the clock says is late, and delivers the dispatch outbox: an MQTT
message to ``community/{c}/dispatch/{responder}`` (QoS 1, delivered = the broker's
PUBACK) and, when the community has a gateway, a webhook signed as alert webhooks
are (``alerts.notify.sign``). An escalation to the street-level control room is
pushed alike, to ``community/{c}/control-room/escalations`` and the same gateway,
its delivery recorded on the ``escalated`` step itself. Responders' replies arrive on
``community/+/dispatch-reply/+``; paho's callback only queues them, the desk's
thread applies them and acknowledges each to the broker after the commit. A reply
that cannot be applied is a dead letter with its reason.

The clock is injected: tests drive escalation without waiting minutes.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from alerts.notify import post_signed
from alerts.worker import PoolWorker
from core.dispatch_contract import (
    REPLY_FILTER,
    BadReply,
    control_room_topic,
    dispatch_topic,
    parse_reply,
    reply_topic,
)
from store.dead_letters import NewDeadLetter, insert_dead_letters
from store.dispatch import (
    DispatchError,
    claim_control_room_pushes,
    claim_deliveries,
    record_control_room_push,
    record_delivery,
    reply_route,
)
from store.incidents import escalate_due, infer_arrivals, respond, sync_alerts

__all__ = ["IncidentDesk"]

_LOG = logging.getLogger(__name__)
Clock = Callable[[], datetime]
# Replies waiting for the desk's thread; past this paho's thread blocks (backpressure).
_MAX_REPLIES = 1_000
# Deliveries claimed per pass; an MQTT publish waits this long for the broker's PUBACK.
_CLAIM = 50
_PUBACK_S = 5.0
# A failed delivery is tried again after this, up to _ATTEMPTS times.
_RETRY_S = 5
_ATTEMPTS = 10


class _Inbound(NamedTuple):
    mid: int
    qos: int
    topic: str
    payload: bytes


def _utc_now() -> datetime:
    return datetime.now(UTC)


class IncidentDesk(PoolWorker):
    THREAD = "incident-desk"
    POOL = "incidents"
    LABEL = "incident desk"

    def __init__(
        self,
        *,
        url: str,
        mqtt_host: str,
        mqtt_port: int,
        mqtt_username: str | None,
        mqtt_password: str | None,
        client_id: str,
        tick_s: float = 1.0,
        clock: Clock = _utc_now,
        private_destinations: bool = False,
        webhook_timeout_s: float = 5.0,
        reply_filter: str = REPLY_FILTER,
    ) -> None:
        self.url = url
        self.clock = clock
        self.private_destinations = private_destinations
        self.webhook_timeout_s = webhook_timeout_s
        self.reply_filter = reply_filter
        super().__init__(url, interval_s=tick_s, join_s=webhook_timeout_s + 10)
        self.ticks = 0  # completed passes: tests wait for a later one
        self.replies_applied = 0
        self._replies: queue.Queue[_Inbound] = queue.Queue(_MAX_REPLIES)
        self._held: _Inbound | None = None
        self._connected = threading.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,  # replies sent while the desk was down wait for it
            manual_ack=True,
        )
        if mqtt_username:
            client.username_pw_set(mqtt_username, mqtt_password)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._host, self._port = mqtt_host, mqtt_port

    # --- paho's thread: hand off only ---

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.reply_filter, qos=1)
            self._connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self._replies.put(_Inbound(message.mid, message.qos, message.topic, bytes(message.payload)))
        self._wake.set()

    # --- life cycle ---

    def start(
        self,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> None:
        """Connect and run the desk's thread; ``spawn`` and ``beat`` (the pipeline's
        supervisor) make its death end the process rather than pass unseen."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        super().start(spawn, beat)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        super().stop()
        self._client.disconnect()
        self._client.loop_stop()

    # --- one pass ---

    def work(self, conn: psycopg.Connection[Any]) -> None:
        self.tick(conn)

    def tick(self, conn: psycopg.Connection[Any]) -> None:
        now = self.clock()
        self._apply_replies(conn, now)
        sync_alerts(conn, now)
        infer_arrivals(conn, now)
        escalate_due(conn, now)
        self.deliver_due(conn, now)
        self.ticks += 1

    def _apply_replies(self, conn: psycopg.Connection[Any], now: datetime) -> None:
        while True:
            if self._held is not None:  # the database failed under it last time
                inbound, self._held = self._held, None
            else:
                try:
                    inbound = self._replies.get_nowait()
                except queue.Empty:
                    return
            try:
                self._apply(conn, inbound, now)
                self.replies_applied += 1
            except psycopg.OperationalError:
                self._held = inbound  # not acknowledged: tried again after the reconnect
                raise
            except (BadReply, DispatchError) as exc:
                _LOG.info("dispatch reply refused on %s: %s", inbound.topic[:200], exc)
                insert_dead_letters(
                    conn,
                    [
                        NewDeadLetter(
                            now,
                            inbound.topic,
                            inbound.payload[:1024],
                            len(inbound.payload),
                            "bad_dispatch_reply",
                            str(exc)[:500],
                            "incident-desk",
                        )
                    ],
                )
            # Committed (autocommit): only now may the broker forget the message.
            self._client.ack(inbound.mid, inbound.qos)

    def _apply(self, conn: psycopg.Connection[Any], inbound: _Inbound, now: datetime) -> None:
        reply = parse_reply(inbound.topic, inbound.payload)
        route = reply_route(conn, reply.dispatch_id)
        # The broker lets a responder write only their own reply topic: the topic says who.
        if route is None or route != (reply.community_id, reply.responder_id):
            raise BadReply(f"no dispatch {reply.dispatch_id} to this responder")
        respond(
            conn, reply.dispatch_id, reply.action, now, f"responder:{reply.responder_id}", "mqtt"
        )

    def deliver_due(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        """Push what is pending; record delivery or the error for a later attempt. The rows
        are locked while they are pushed: another worker's desk skips them."""
        with conn.transaction():
            done = self._deliver_claimed(conn, now)
        with conn.transaction():
            return done + self._deliver_escalations(conn, now)

    def _deliver_escalations(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        """Push control-room escalations of open incidents with a channel still pending
        and due; each channel's state, attempts and error go back into the step."""
        rows = claim_control_room_pushes(conn, _CLAIM)
        pushed = 0
        for step_id, at, detail, incident, community, building, kind, title, url, secret in rows:
            payload = {
                "event": "escalation",
                "step_id": step_id,
                "incident_id": incident,
                "community_id": community,
                "building": building,
                "incident_type": kind,
                "title": title,
                "control_room": detail.get("control_room"),
                "reason": detail.get("reason"),
                "escalated_at": at.isoformat(),
            }
            body = json.dumps(payload, separators=(",", ":")).encode()
            push: dict[str, dict[str, Any]] = detail["push"]
            for channel, state in push.items():
                due = state.get("next_at")
                if state["state"] != "pending" or (
                    due is not None and datetime.fromisoformat(due) > now
                ):
                    continue
                if channel == "mqtt":
                    error = self._publish(control_room_topic(community), body)
                else:
                    error = self._post(int(step_id), url, secret or "", body, "escalation")
                attempts = int(state["attempts"]) + 1
                if error is None:
                    push[channel] = {
                        "state": "delivered",
                        "attempts": attempts,
                        "delivered_at": now.isoformat(),
                    }
                else:
                    push[channel] = {
                        "state": "dead" if attempts >= _ATTEMPTS else "pending",
                        "attempts": attempts,
                        "last_error": error[:500],
                        "next_at": (now + timedelta(seconds=_RETRY_S)).isoformat(),
                    }
                pushed += 1
            record_control_room_push(conn, step_id, push)
        return pushed

    def _deliver_claimed(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        rows = claim_deliveries(conn, _CLAIM)
        for row in rows:
            (
                delivery,
                channel,
                attempts,
                dispatch_id,
                community,
                responder,
                at,
                level,
                incident,
                kind,
                title,
                building,
                phone,
                url,
                secret,
            ) = row
            payload = {
                "event": "dispatch",
                "dispatch_id": dispatch_id,
                "incident_id": incident,
                "community_id": community,
                "building": building,
                "incident_type": kind,
                "title": title,
                "responder_id": responder,
                "phone": phone,
                "level": level,
                "dispatched_at": at.isoformat(),
                "reply_topic": reply_topic(community, responder),
            }
            body = json.dumps(payload, separators=(",", ":")).encode()
            if channel == "mqtt":
                error = self._publish(dispatch_topic(community, responder), body)
            else:
                error = self._post(int(delivery), url, secret or "", body)
            record_delivery(
                conn,
                int(delivery),
                int(dispatch_id),
                int(attempts) + 1,
                error,
                now,
                max_attempts=_ATTEMPTS,
                retry_s=_RETRY_S,
            )
        return len(rows)

    def _publish(self, topic: str, body: bytes) -> str | None:
        if not self._connected.is_set():
            return "not connected to the broker"
        info = self._client.publish(topic, body, qos=1)
        try:
            info.wait_for_publish(_PUBACK_S)
        except (RuntimeError, ValueError) as exc:
            return f"publish failed: {exc}"
        return None if info.is_published() else "no PUBACK from the broker"

    def _post(
        self, delivery: int, url: str | None, secret: str, body: bytes, kind: str = "dispatch"
    ) -> str | None:
        if not url:
            return "the community has no dispatch gateway"
        return post_signed(
            url,
            secret,
            body,
            delivery=f"{kind}-{delivery}",
            timeout_s=self.webhook_timeout_s,
            private_destinations=self.private_destinations,
        )
