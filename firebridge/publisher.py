"""Canonical messages to the broker, QoS 1, with a future per message for its PUBACK.

paho's callbacks run on its network thread and only hand results to the event
loop (``call_soon_threadsafe``). The session is clean on purpose: a message lost
with a connection is not retried by us but by the UITD, whose frame was never
confirmed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import ConfigurationError, ServiceUnavailable

__all__ = ["CanonicalPublisher"]

_LOG = logging.getLogger(__name__)


class CanonicalPublisher:
    def __init__(self, mqtt_url: str, *, client_id: str) -> None:
        """To the broker of ``mqtt://[user:pass@]host:port`` (the settings' ``mqtt_url``)."""
        broker = urlsplit(mqtt_url)
        if not broker.hostname:
            raise ConfigurationError(f"not an MQTT URL: {mqtt_url!r}")
        self.host = broker.hostname
        self.port = broker.port or 1883
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if broker.username:
            self._client.username_pw_set(broker.username, broker.password)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: set[int] = set()  # PUBACKs that came before publish() returned
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = asyncio.Event()

    async def start(self, connect_s: float = 30) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._client.connect_async(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise ServiceUnavailable("mqtt", f"{self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        try:
            await asyncio.wait_for(self.connected.wait(), connect_s)
        except TimeoutError as exc:
            raise ServiceUnavailable("mqtt", f"{self.host}:{self.port}: no connection") from exc

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Queue one message; the future is done at its PUBACK, failed if the link drops."""
        assert self._loop is not None, "start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        if not self.connected.is_set():
            future.set_exception(ServiceUnavailable("mqtt", "not connected"))
            return future
        # Not under our lock: paho calls on_publish holding its own message lock,
        # which publish() takes too; the two orders would deadlock.
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            future.set_exception(ServiceUnavailable("mqtt", mqtt.error_string(info.rc)))
            return future
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                future.set_result(None)
            else:
                self._pending[info.mid] = future
        return future

    # -- paho's network thread ------------------------------------------------------

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            _LOG.error("broker refused the bridge: %s", reason)
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        with self._lock:
            lost, self._pending = self._pending, {}
            self._early.clear()
        if self._loop is None:
            return
        _LOG.warning("bridge lost the broker (%s); %d messages unconfirmed", reason, len(lost))

        def fail() -> None:
            self.connected.clear()
            for future in lost.values():
                if not future.done():
                    future.set_exception(ServiceUnavailable("mqtt", f"disconnected: {reason}"))

        self._loop.call_soon_threadsafe(fail)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, _r: ReasonCode, _p: Any) -> None:
        with self._lock:
            future = self._pending.pop(mid, None)
            if future is None:
                self._early.add(mid)
                return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
