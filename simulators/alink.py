"""Simulated Alink devices: the class models' samples, spoken as an Alink product.

Each device connects as itself (its id is the Alink deviceName), subscribes to
the answers to its own posts, and publishes what its class model samples:
property posts (``…/thing/event/property/post``) for the metrics its product
profile names, and event posts (``…/thing/event/{identifier}/post``) for the
events it names. Values go out in the product's raw units (the profile's scale
and offset undone), so the pipeline's mapping is exercised, not bypassed. The
answers are counted: a post without its 200 is what a real device retries.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import yaml
from pydantic import ValidationError

from core.alink import PROPERTY, device_reply_filter, post_topic
from core.errors import ConfigurationError, ServiceUnavailable
from core.models import Device
from core.profiles import AlinkProduct, parse_profile
from simulators.connection import BrokerAddress, Protocol, connect_client
from simulators.credentials import DeviceCredentials, address_for
from simulators.devices import build_model
from simulators.fire import fire_kind_for_metrics
from simulators.model import DeviceModel, Metrics, SimEvent

__all__ = ["AlinkSpeaker", "AlinkStats", "alink_devices", "load_product", "run_alink"]

# How long to wait for the answers to the last posts after the run, by default.
ANSWER_WAIT_S = 10.0
_SUBSCRIBE_WAIT_S = 10.0


def load_product(path: Path) -> AlinkProduct:
    try:
        profile = parse_profile(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    if not isinstance(profile, AlinkProduct):
        raise ConfigurationError(f"{path}: not an Alink product profile (kind: alink)")
    return profile


def alink_devices(product: AlinkProduct, *, community_id: str, count: int) -> list[Device]:
    """Devices of the product's class; the id is the Alink deviceName."""
    return [
        Device(
            id=f"{community_id}-{product.product_key}-{n:03d}",
            community_id=community_id,
            device_class=product.device_class,
            model=product.product_key,
            expected_interval_s=60,
        )
        for n in range(1, count + 1)
    ]


class AlinkSpeaker:
    """One product's thing model: platform metrics and events into Alink posts."""

    def __init__(self, product: AlinkProduct) -> None:
        self.product = product
        self._properties = {m.metric: (ident, m) for ident, m in product.properties.items()}
        self._events = {e.event: ident for ident, e in product.events.items()}

    def property_post(self, request: int, metrics: Metrics) -> bytes | None:
        params: dict[str, float] = {}
        for metric, value in metrics.items():
            found = self._properties.get(metric)
            if found is not None:
                ident, mapping = found
                params[ident] = round((value - mapping.offset) / mapping.scale, 6)
        if not params:
            return None
        return orjson.dumps(
            {
                "id": str(request),
                "version": "1.0",
                "params": params,
                "method": "thing.event.property.post",
            }
        )

    def event_post(self, request: int, event: SimEvent, ts_ms: int) -> tuple[str, bytes] | None:
        ident = self._events.get(event.name)
        if ident is None:
            return None
        body = {
            "id": str(request),
            "version": "1.0",
            "params": {"value": dict(event.data), "time": ts_ms},
            "method": f"thing.event.{ident}.post",
        }
        return ident, orjson.dumps(body)


@dataclass
class AlinkStats:
    posts: int = 0
    accepted: int = 0  # answered 200
    refused: dict[str, int] = field(default_factory=dict)  # answered otherwise, by code
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def answered(self) -> int:
        return self.accepted + sum(self.refused.values())

    def answer(self, payload: bytes) -> None:
        try:
            code = orjson.loads(payload).get("code")
        except (orjson.JSONDecodeError, AttributeError):
            code = "unreadable"
        with self._lock:
            if code == 200:
                self.accepted += 1
            else:
                self.refused[str(code)] = self.refused.get(str(code), 0) + 1


def _connect(
    address: BrokerAddress,
    device: Device,
    product: AlinkProduct,
    stats: AlinkStats,
    protocol: Protocol,
) -> mqtt.Client:
    client = connect_client(address, client_id=device.id, protocol=protocol)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = lambda _c, _u, message: stats.answer(bytes(message.payload))
    client.subscribe(device_reply_filter(product.product_key, device.id), qos=1)
    if not subscribed.wait(_SUBSCRIBE_WAIT_S):
        client.loop_stop()
        raise ServiceUnavailable("mqtt", f"{device.id}: no answer to its subscription")
    return client


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _model(
    device: Device, number: int, product: AlinkProduct, *, seed: int, incident_scale: float
) -> DeviceModel:
    """The device's model, seeded by its place in the run and of a kind the product posts.

    Seeded by the id, a device's draws (a fire sensor's kind among them) changed with
    every community id, and a run whose sensors all drew kinds the product has no
    property for posted nothing; by number, a seed fixes the run whatever the ids.
    """
    update: dict[str, str] = {"id": f"alink-{number:03d}"}
    if device.device_class == "fire":
        kind = fire_kind_for_metrics({m.metric for m in product.properties.values()})
        if kind is not None:
            update["model"] = kind.model
    return build_model(device.model_copy(update=update), seed=seed, incident_scale=incident_scale)


def run_alink(
    *,
    mqtt_url: str,
    product: AlinkProduct,
    devices: Sequence[Device],
    duration_s: float | None = None,
    rounds: int | None = None,
    interval_s: float = 5.0,
    seed: int = 0,
    incident_scale: float = 1.0,
    protocol: Protocol = "3.1.1",
    credentials: Mapping[str, DeviceCredentials] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], datetime] = _utc_now,
    answer_wait_s: float = ANSWER_WAIT_S,
) -> AlinkStats:
    """Post a round every ``interval_s`` until ``duration_s``, ``rounds`` or ``stop``; then
    wait up to ``answer_wait_s`` for the answers to every post.

    ``clock`` is read once a round and is the time the models step to: with a clock
    that steps on each reading, ``rounds`` and ``seed`` fix every post, however the
    machine's timing falls.
    """
    stop = stop or threading.Event()
    address = BrokerAddress.parse(mqtt_url)
    speaker = AlinkSpeaker(product)
    stats = AlinkStats()
    models = {
        d.id: _model(d, n, product, seed=seed, incident_scale=incident_scale)
        for n, d in enumerate(devices, start=1)
    }
    clients: dict[str, mqtt.Client] = {}
    requests = itertools.count(1)
    try:
        for device in devices:
            clients[device.id] = _connect(
                address_for(address, device.id, credentials or {}), device, product, stats, protocol
            )
        deadline = None if duration_s is None else time.monotonic() + duration_s
        played = 0
        while not stop.is_set() and (rounds is None or played < rounds):
            now = clock()
            ts_ms = int(now.timestamp() * 1000)
            for device in devices:
                sample = models[device.id].sample(now)
                client = clients[device.id]
                body = speaker.property_post(next(requests), sample.metrics)
                if body is not None:
                    _publish(client, post_topic(product.product_key, device.id, PROPERTY), body)
                    stats.posts += 1
                for event in sample.events:
                    found = speaker.event_post(next(requests), event, ts_ms)
                    if found is not None:
                        ident, body = found
                        _publish(client, post_topic(product.product_key, device.id, ident), body)
                        stats.posts += 1
            played += 1
            if deadline is not None and time.monotonic() >= deadline:
                break
            if (rounds is None or played < rounds) and stop.wait(interval_s):
                break
        answers_by = time.monotonic() + answer_wait_s
        while stats.answered < stats.posts and time.monotonic() < answers_by:
            time.sleep(0.05)
    finally:
        for client in clients.values():
            client.disconnect()
            client.loop_stop()
    return stats


def _publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    info: Any = client.publish(topic, payload, qos=1)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        raise ServiceUnavailable("mqtt", f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
