"""One device directory for the gateway and the rule engine, fed by LISTEN/NOTIFY on
registry changes (issue 15), on a real PostgreSQL and the real API."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.directory import DeviceDirectory
from core.settings import Settings
from store import schema
from store.accounts import create_token
from store.device_directory import DEVICES_CHANNEL, DirectoryReader, follow_changes
from tests.integration.support import wait_for

pytestmark = pytest.mark.integration

# Far beyond the test: only a notification can bring a change in time.
NEVER_S = 3600.0


@pytest.fixture
def followed(fresh_database_url: str, unique_id: str) -> Iterator[DeviceDirectory]:
    """A directory fed by notifications only, once its first full read is done."""
    schema.upgrade(fresh_database_url)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES ('seed', 'seed')")
        conn.execute(
            "INSERT INTO devices (id, community_id, device_class) VALUES (%s, 'seed', 'fire')",
            (f"seed{unique_id}",),
        )
    reader = DirectoryReader(fresh_database_url)
    directory = reader.directory(miss_refresh_s=NEVER_S)
    directory.full_refresh_s = NEVER_S
    stop = threading.Event()
    feed = threading.Thread(
        target=follow_changes, args=(fresh_database_url, directory, stop), daemon=True
    )
    feed.start()
    try:
        wait_for(lambda: directory.version >= 1, 30, "the feed's first full read")
        yield directory
    finally:
        stop.set()
        feed.join(10)
        reader.close()
    assert not feed.is_alive()


def test_a_device_registered_through_the_api_is_known_without_waiting_for_the_timer(
    fresh_database_url: str, followed: DeviceDirectory, unique_id: str
) -> None:
    community, device = f"c{unique_id}", f"w{unique_id}"
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        auth = {"Authorization": f"Bearer {create_token(conn, 'directory test')}"}
    with TestClient(create_app(Settings(database_url=fresh_database_url))) as client:
        created = client.post(
            "/api/v1/communities", json={"id": community, "name": "Test"}, headers=auth
        )
        assert created.status_code == 201, created.text
        body = {"id": device, "community_id": community, "device_class": "wearable"}
        registered = client.post("/api/v1/devices", json=body, headers=auth)
        assert registered.status_code == 201, registered.text
        wait_for(lambda: followed.get(device) is not None, 30, "the new device in the directory")
        info = followed.get(device)
        assert info is not None
        assert (info.community_id, info.device_class, info.state) == (
            community,
            "wearable",
            "active",
        )
        retired = client.post(f"/api/v1/devices/{device}/decommission", headers=auth)
        assert retired.status_code == 200, retired.text
        wait_for(
            lambda: (i := followed.get(device)) is not None and i.state == "decommissioned",
            30,
            "the decommissioning in the directory",
        )


def test_the_pipelines_own_updates_of_a_device_notify_nobody(
    fresh_database_url: str, unique_id: str
) -> None:
    """Last seen and link status change with every batch: they must not make every
    pipeline re-read the device."""
    schema.upgrade(fresh_database_url)
    community, device, later = f"c{unique_id}", f"w{unique_id}", f"x{unique_id}"
    with (
        psycopg.connect(fresh_database_url, autocommit=True) as listen,
        psycopg.connect(fresh_database_url, autocommit=True) as conn,
    ):
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (community, community))
        conn.execute(
            "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
            (device, community),
        )
        listen.execute(f"LISTEN {DEVICES_CHANNEL}")
        conn.execute(
            "UPDATE devices SET last_seen = now(), last_received_at = now(), online = true,"
            " status_at = now() WHERE id = %s",
            (device,),
        )
        # A later change that does notify: everything before it has arrived by then.
        conn.execute(
            "INSERT INTO devices (id, community_id, device_class) VALUES (%s, %s, 'wearable')",
            (later, community),
        )
        received = [n.payload for n in listen.notifies(timeout=30, stop_after=1)]
    assert received == [later]
