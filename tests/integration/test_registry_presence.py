"""Online and offline through the real pipeline: the retained status, the Last Will
ordered as the broker delivers it, and data that proves a device is back."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import psycopg
import pytest

from core.connectivity import Connectivity, judge
from core.fleet import presence_of
from core.registry import DeviceSpec
from core.topics import device_topic
from store import schema
from store.devices import get_device, register_device
from tests.integration.support import Publisher, pipeline_thread, telemetry, wait_for

pytestmark = pytest.mark.integration


def test_status_follows_the_brokers_order_not_the_devices_ts(
    database_url: str, mqtt_url: str, unique_id: str
) -> None:
    schema.upgrade(database_url)
    community, device = f"c{unique_id}", f"{unique_id}-w"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, 'x')", (community,))
        spec = DeviceSpec(
            id=device, community_id=community, device_class="wearable", expected_interval_s=60
        )
        assert isinstance(
            register_device(conn, spec, visible=lambda _c: True, installed_by="t"), tuple
        )

        def state() -> Connectivity:
            record = get_device(conn, device)
            assert record is not None
            return judge(presence_of(record), datetime.now(UTC))

        status = device_topic(community, "wearable", device, "status")
        publisher = Publisher(mqtt_url, f"dev-{unique_id}")
        try:
            with pipeline_thread(database_url, mqtt_url, f"pipe-{unique_id}", community):
                connected = datetime.now(UTC)
                # The Will as devices compose it: stamped at connect, before the online
                # status that follows. The broker publishes it when the link dies, so it
                # is the newer news whatever its ts says.
                will = {"online": False, "ts": int(connected.timestamp() * 1000)}
                online = {"online": True, "ts": int(connected.timestamp() * 1000) + 500}
                publisher.publish(status, orjson.dumps(online))
                publisher.flush()
                wait_for(lambda: state() is Connectivity.ONLINE, 10, "online")
                publisher.publish(status, orjson.dumps(will))
                publisher.flush()
                wait_for(lambda: state() is Connectivity.OFFLINE, 10, "offline at the Will")
                # A reconnect: online again, whatever its ts.
                publisher.publish(status, orjson.dumps({"online": True, "ts": 1_000_000_000_000}))
                publisher.flush()
                wait_for(lambda: state() is Connectivity.ONLINE, 10, "online after reconnect")
                publisher.publish(status, orjson.dumps({"online": False}))
                publisher.flush()
                wait_for(lambda: state() is Connectivity.OFFLINE, 10, "offline")
                # ...until the device speaks again.
                topic = device_topic(community, "wearable", device, "telemetry")
                publisher.publish(topic, telemetry(1, int(time.time() * 1000)))
                publisher.flush()
                wait_for(lambda: state() is Connectivity.ONLINE, 10, "back online")
        finally:
            publisher.close()
