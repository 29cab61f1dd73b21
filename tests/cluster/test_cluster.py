"""The clustered deployment under faults: a 3-node RabbitMQ cluster, several workers.

Devices of several communities publish over MQTT 3.1.1 QoS 1 to the nodes of a
private RabbitMQ cluster; ``smartcommunity worker`` processes consume the
community-shard queues into one PostgreSQL. A broker node and then the active
worker of a shard are killed with SIGKILL under load, and a worker joins under
load. Afterwards every device's rows are in the database exactly once and every
scripted incident has exactly one alert: the confirmed fire whose two detector
reports straddle the worker kill included (the takeover rebuilt the rule state).

Slow (minutes): marker ``cluster``, run by ``make test-cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.shards import shard_of
from smartcommunity.cluster_rig import poll, worker_metrics
from smartcommunity.rabbit_cluster import RabbitCluster
from tests.cluster.support import SHARDS, Load, Rig, explained, register, rig_on, scalar, settled

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]


@pytest.fixture
def rig(
    cluster: RabbitCluster, fresh_database_url: str, unique_id: str, tmp_path: Path
) -> Iterator[Rig]:
    uid = unique_id[-8:]
    made = register(fresh_database_url, uid)
    with rig_on(cluster, fresh_database_url, uid, tmp_path, made) as rig:
        yield rig


def test_broker_node_then_active_worker_killed_under_load(rig: Rig) -> None:
    for i in range(3):
        rig.worker(i)
    for community in rig.communities:
        community.publisher.wait_connected()
    fire = rig.communities[0]
    shard = shard_of(fire.id, SHARDS)
    with explained(rig), Load(rig.communities) as load:
        poll(lambda: rig.telemetry_rows() > 200, 120, "telemetry flowing through the workers")

        # A broker node dies (the first: it holds the queue leaders it declared).
        rig.cluster.kill(rig.cluster.nodes[0])
        for community in rig.communities:
            community.event(community.wearables[0], "wearable", "sos_pressed")
        at_kill = rig.telemetry_rows()
        poll(lambda: rig.telemetry_rows() > at_kill + 300, 180, "ingest going on after node kill")

        # First detector of each building: a pre-alarm, seen by the shard's owner.
        for community in rig.communities:
            community.event(community.detectors[0], "fire", "smoke_alarm")
        poll(lambda: len(rig.alerts("fire.confirmed", fire.id)) == 1, 120, "the pre-alarm")
        with psycopg.connect(rig.url, autocommit=True) as conn:
            row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        victim = rig.active_worker(shard, row[0])
        victim.kill()

        # The second detector reaches whoever takes the shard over.
        for community in rig.communities:
            community.event(community.detectors[1], "fire", "smoke_alarm")
        at_kill = rig.telemetry_rows()
        poll(lambda: rig.telemetry_rows() > at_kill + 300, 180, "ingest going on after worker kill")
        load.stop.set()
    with settled(rig, load):
        events = scalar(rig.url, "SELECT count(*) FROM device_events")
        assert events == sum(c.events for c in rig.communities)
        survivors = [w for w in rig.workers if w.alive]
        assert survivors == [w for w in rig.workers if w is not victim]
        # Figures are saved every few seconds: the takeover shows up in them.
        poll(
            lambda: (
                sum(
                    worker_metrics(rig.url, w.name).get("shard_takeovers_total", 0)
                    for w in survivors
                )
                >= 1
            ),
            30,
            "a takeover in the survivors' figures",
        )


def test_worker_joining_under_load_takes_shards_without_loss(rig: Rig) -> None:
    rig.worker(0)
    for community in rig.communities:
        community.publisher.wait_connected()
    with explained(rig), Load(rig.communities) as load:
        poll(lambda: rig.telemetry_rows() > 200, 120, "telemetry flowing through one worker")
        for community in rig.communities:
            community.event(community.detectors[0], "fire", "smoke_alarm")
        joined = rig.worker(1)
        # The first worker hands shards over (a fair share each); the newcomer takes them.
        poll(
            lambda: worker_metrics(rig.url, joined.name).get("shard_takeovers_total", 0) >= 1,
            120,
            "the joining worker active on a shard",
        )
        for community in rig.communities:
            community.event(community.detectors[1], "fire", "smoke_alarm")
            community.event(community.wearables[0], "wearable", "sos_pressed")
        at_join = rig.telemetry_rows()
        poll(lambda: rig.telemetry_rows() > at_join + 300, 180, "ingest going on after the join")
        load.stop.set()
    with settled(rig, load):
        first = worker_metrics(rig.url, rig.workers[0].name)
        assert first.get("shard_releases_total", 0) >= 1
