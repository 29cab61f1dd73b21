"""Opening an alert is idempotent per (rule, subject, episode): migration 0013.

A batch evaluated again after its alert was resolved (a worker killed after
commit and before the acknowledgement; another worker taking the shard over
and replaying) must not open the same episode twice, while a new episode of
the same rule and subject still opens a new alert.

A shard's engine evaluates its own communities only, out of the process's one
device directory.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest

from alerts.model import AlertChange, ChangeKind
from alerts.store import AlertStore
from core.models import DeviceEvent
from core.rules import Severity, parse_rule
from core.settings import AlertSettings
from core.topics import device_topic
from gateway.shard_alerts import ShardAlertListener
from gateway.shards import shard_of
from ingest.batch import Accepted
from store.device_directory import DirectoryReader
from tests.integration.alerts_support import T0, Clock, rows, setup_devices, sos_change
from tests.integration.test_alerts_lifecycle import SOS

pytestmark = pytest.mark.integration


def _sos(device: str, at: float, kind: ChangeKind = ChangeKind.RAISE) -> AlertChange:
    return sos_change(device, at, Severity.MAJOR, rule={**SOS, "auto_resolve": True}, kind=kind)


def _alerts(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (str(r[0]), str(r[1]))
            for r in conn.execute("SELECT state, first_seen::text FROM alerts ORDER BY id")
        ]


def test_a_resolved_episode_evaluated_again_opens_nothing(fresh_database_url: str) -> None:
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", None)])
    now = T0.timestamp()
    first, second = (
        AlertStore(url=fresh_database_url, worker="a"),
        AlertStore(url=fresh_database_url, worker="b"),
    )
    try:
        # Worker a: the SOS is raised and, by its clear event, resolved.
        first.apply([_sos("w1", now)], {}, now)
        first.apply([_sos("w1", now + 5, ChangeKind.CLEAR)], {}, now + 5)
        assert [s for s, _ in _alerts(fresh_database_url)] == ["resolved"]
        # Worker b gets the same batch redelivered and evaluates it again.
        second.apply([_sos("w1", now)], {}, now + 10)
        assert [s for s, _ in _alerts(fresh_database_url)] == ["resolved"]
        # A later SOS of the same device is a new episode: a new alert.
        second.apply([_sos("w1", now + 60)], {}, now + 60)
        assert [s for s, _ in _alerts(fresh_database_url)] == ["resolved", "open"]
    finally:
        first.close()
        second.close()


def test_a_shard_engine_sees_its_communities_of_the_shared_directory(
    fresh_database_url: str,
) -> None:
    # Two communities in different shards of two, each with one wearable.
    mine, other = (next(f"c-{i}" for i in range(100) if shard_of(f"c-{i}", 2) == s) for s in (0, 1))
    setup_devices(fresh_database_url, mine, [("wm", "wearable", None)])
    setup_devices(fresh_database_url, other, [("wo", "wearable", None)])
    reader = DirectoryReader(fresh_database_url)
    directory = reader.directory(miss_refresh_s=60.0)
    directory.refresh()
    clock = Clock()
    listener = ShardAlertListener(
        shard=0,
        shards=2,
        store=AlertStore(url=fresh_database_url, worker="sc.shard.000"),
        settings=AlertSettings(tick_s=0.001, reload_s=0.001),
        clock=clock,
        seed=[parse_rule(SOS)],
        directory=directory,
    )
    try:
        listener.start()
        # The process's directory holds both; the shard's engine only its own.
        assert set(directory.devices()) == {"wm", "wo"}
        assert set(listener.engine.directory) == {"wm"}
        ts = clock()
        failures = listener.committed(
            [
                _sos_event(mine, "wm", ts),
                _sos_event(other, "wo", ts),
            ]
        )
        assert failures == []
        opened = rows(fresh_database_url, "SELECT device_id FROM alerts")
        assert opened == [("wm",)]
    finally:
        listener.stop()
        reader.close()


def _sos_event(community: str, device: str, ts: datetime) -> Accepted:
    return Accepted(
        device_id=device,
        topic=device_topic(community, "wearable", device, "event"),
        payload=b"{}",
        event=DeviceEvent(device, "sos_pressed", ts, {}, None, ts),
        device_time=ts,
        received_at=ts,
    )
