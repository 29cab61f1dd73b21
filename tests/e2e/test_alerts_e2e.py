"""A scripted incident through the real broker, pipeline, database and API stream.

Two smoke detectors in building 3 go off 30 s apart (device time): one
pre-alarm that becomes a confirmed fire (GB 50116 4.1.6), not two alerts; a
detector in building 4 is a separate pre-alarm; an SOS is its own alert. The
same transitions come out on the MQTT alert topics and on the live stream.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.settings import Settings
from gateway.bridge import parse_mqtt_url
from store.accounts import create_token
from tests.integration.alerts_support import rows, setup_devices
from tests.integration.support import Publisher, pipeline_thread, wait_for
from tests.servers import running_api

pytestmark = pytest.mark.integration
# raised, severity raised (confirmed), raised x2, repeated.
STREAM_EVENTS = 5


class AlertSubscriber:
    """Listens on community/{id}/alerts/# like any outside system would."""

    def __init__(self, mqtt_url: str, community: str) -> None:
        address = parse_mqtt_url(mqtt_url)
        self.messages: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{community}")
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(f"community/{community}/alerts/#", 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert subscribed.wait(10), "alert subscriber did not subscribe"

    def take(self, count: int, timeout: float = 20) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            found.append(self.messages.get(timeout=max(0.1, deadline - time.monotonic())))
        return found

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def api_server(fresh_database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    with running_api(Settings(database_url=fresh_database_url)) as api:
        with psycopg.connect(fresh_database_url) as conn:
            token = create_token(conn, "control room")
        yield api.url, {"Authorization": f"Bearer {token}"}


def stream_reader(
    base: str, auth: dict[str, str], community: str, found: list[dict[str, Any]],
    ready: threading.Event, stop: threading.Event,
) -> None:  # fmt: skip
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "GET", f"{base}/api/v1/alerts/stream", headers=auth, params={"community_id": community}
        ) as response,
    ):
        ready.set()
        for line in response.iter_lines():
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
            if stop.is_set() or len(found) >= STREAM_EVENTS:
                return


def test_two_smoke_detectors_in_building_3_make_one_confirmed_fire(
    fresh_database_url: str, mqtt_url: str, unique_id: str, api_server: tuple[str, dict[str, str]]
) -> None:
    community = f"c{unique_id}"
    setup_devices(
        fresh_database_url,
        community,
        [
            (f"{unique_id}-smoke-1", "fire", "3"),
            (f"{unique_id}-smoke-2", "fire", "3"),
            (f"{unique_id}-smoke-9", "fire", "4"),
            (f"{unique_id}-watch", "wearable", None),
        ],
    )
    smoke1, smoke2, smoke9, watch = (
        f"{unique_id}-smoke-1", f"{unique_id}-smoke-2", f"{unique_id}-smoke-9",
        f"{unique_id}-watch",
    )  # fmt: skip
    base, auth = api_server
    streamed: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()
    reader = threading.Thread(
        target=stream_reader, args=(base, auth, community, streamed, ready, stop), daemon=True
    )
    reader.start()
    assert ready.wait(10)
    subscriber = AlertSubscriber(mqtt_url, community)
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    now_ms = int(time.time() * 1000) - 60_000

    def send(device: str, cls: str, payload: dict[str, Any]) -> None:
        publisher.publish(
            f"community/{community}/{cls}/{device}/event", json.dumps(payload).encode()
        )
        publisher.flush()

    try:
        with pipeline_thread(fresh_database_url, mqtt_url, f"p-{unique_id}", community):
            send(
                smoke1,
                "fire",
                {"ts": now_ms, "seq": 1, "event": "smoke_alarm", "data": {"value": 4.1}},
            )
            pre = subscriber.take(1)
            send(smoke2, "fire", {"ts": now_ms + 30_000, "seq": 1, "event": "smoke_alarm"})
            confirmed = subscriber.take(1)
            send(smoke9, "fire", {"ts": now_ms + 31_000, "seq": 1, "event": "smoke_alarm"})
            send(watch, "wearable", {"ts": now_ms + 32_000, "seq": 1, "event": "sos_pressed"})
            others = subscriber.take(2)
            # The same detector again adds nothing; a second SOS press is an occurrence.
            send(smoke1, "fire", {"ts": now_ms + 40_000, "seq": 2, "event": "smoke_alarm"})
            send(watch, "wearable", {"ts": now_ms + 45_000, "seq": 2, "event": "sos_pressed"})
            wait_for(
                lambda: rows(fresh_database_url, "SELECT sum(occurrences) FROM alerts")[0][0] == 5,
                20,
                "the repeat",
            )
            wait_for(lambda: len(streamed) >= STREAM_EVENTS, 20, "the stream")
    finally:
        stop.set()
        reader.join(20)
        publisher.close()
        subscriber.close()

    assert [(t.rsplit("/", 1)[1], m["action"], m["subject"]) for t, m in pre] == [
        ("major", "raised", f"building:{community}/3")
    ]
    assert pre[0][1]["title"] == "Fire pre-alarm (one detector) - verify on site"
    assert [(t.rsplit("/", 1)[1], m["action"], m["subject"]) for t, m in confirmed] == [
        ("critical", "severity_raised", f"building:{community}/3")
    ]
    assert sorted((t.rsplit("/", 1)[1], m["rule_id"], m["subject"]) for t, m in others) == [
        ("critical", "wearable.sos", f"device:{watch}"),
        ("major", "fire.confirmed", f"building:{community}/4"),
    ]
    alerts = rows(
        fresh_database_url,
        "SELECT rule_id, subject, severity, state, occurrences FROM alerts ORDER BY id",
    )
    assert alerts == [
        ("fire.confirmed", f"building:{community}/3", "critical", "open", 2),
        ("fire.confirmed", f"building:{community}/4", "major", "open", 1),
        ("wearable.sos", f"device:{watch}", "critical", "open", 2),
    ]
    history = rows(
        fresh_database_url,
        "SELECT h.action, h.severity FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
        " WHERE a.subject = %s ORDER BY h.id",
        (f"building:{community}/3",),
    )
    assert history == [("raised", "major"), ("severity_raised", "critical")]
    seen = [(e["action"], e["subject"]) for e in streamed]
    assert seen[:2] == [
        ("raised", f"building:{community}/3"),
        ("severity_raised", f"building:{community}/3"),
    ]
    assert sorted(seen[2:4]) == [
        ("raised", f"building:{community}/4"),
        ("raised", f"device:{watch}"),
    ]
    assert seen[4:] == [("repeated", f"device:{watch}")]
    assert subscriber.messages.empty()  # a repeat is not announced again
