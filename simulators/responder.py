"""A simulated responder: a phone app that gets dispatches over MQTT and answers them.

It subscribes to its own dispatch topic and, for each dispatch, replies
``received`` at once, ``accept`` after ``accept_after_s`` and ``arrive`` after a
further ``travel_s`` (docs/scenarios.md). ``answers=False`` is the responder who
does not pick up: nothing is sent, so the platform must escalate. Timers run on a
thread of their own; paho's callback only schedules them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.dispatch_contract import dispatch_topic, reply_topic
from simulators.connection import BrokerAddress

__all__ = ["ResponderActor", "ResponderBehaviour"]

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResponderBehaviour:
    accept_after_s: float = 2.0
    travel_s: float = 5.0
    answers: bool = True


@dataclass
class ResponderActor:
    community_id: str
    responder_id: str
    mqtt_url: str
    behaviour: ResponderBehaviour = ResponderBehaviour()
    username: str | None = None
    password: str | None = None
    # Dispatches received and replies sent, for scenarios and tests to wait on.
    received: list[int] = field(default_factory=list)
    sent: list[tuple[int, str]] = field(default_factory=list)
    _client: mqtt.Client | None = None
    _timers: list[threading.Timer] = field(default_factory=list)
    _subscribed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, timeout: float = 30.0) -> None:
        address = BrokerAddress.parse(self.mqtt_url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"responder-{self.community_id}-{self.responder_id}",
            protocol=mqtt.MQTTv311,
        )
        user = self.username or address.username
        if user:
            client.username_pw_set(user, self.password or address.password)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_a: self._subscribed.set()
        client.on_message = self._on_message
        client.connect_async(address.host, address.port, keepalive=30)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(timeout):
            raise TimeoutError(f"responder {self.responder_id} did not subscribe")

    def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout``) until every reply scheduled so far is sent."""
        deadline = time.monotonic() + timeout
        with self._lock:
            timers = list(self._timers)
        for timer in timers:
            timer.join(max(0.0, deadline - time.monotonic()))
        return all(not t.is_alive() for t in timers)

    def stop(self) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(dispatch_topic(self.community_id, self.responder_id), qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            dispatch_id = int(json.loads(message.payload)["dispatch_id"])
        except (ValueError, KeyError, TypeError):
            _LOG.warning("responder %s: not a dispatch on %s", self.responder_id, message.topic)
            return
        with self._lock:
            if dispatch_id in self.received:
                return  # a redelivery
            self.received.append(dispatch_id)
        if not self.behaviour.answers:
            return
        self._reply(dispatch_id, "received")
        accept = self.behaviour.accept_after_s
        self._later(accept, dispatch_id, "accept")
        self._later(accept + self.behaviour.travel_s, dispatch_id, "arrive")

    def _later(self, delay: float, dispatch_id: int, action: str) -> None:
        timer = threading.Timer(delay, self._reply, (dispatch_id, action))
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _reply(self, dispatch_id: int, action: str) -> None:
        if self._client is None:
            return
        body = json.dumps({"dispatch_id": dispatch_id, "action": action}).encode()
        self._client.publish(reply_topic(self.community_id, self.responder_id), body, qos=1)
        with self._lock:
            self.sent.append((dispatch_id, action))
