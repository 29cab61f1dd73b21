"""Community shards on RabbitMQ: which shard a community is in, and the AMQP names.

RabbitMQ's MQTT plugin publishes every device message to ``amq.topic`` with the
topic's ``/`` turned into ``.`` (and ``.`` into ``/``), so
``community/c1/fire/d1/event`` arrives as ``community.c1.fire.d1.event``.
Each community gets one binding, ``community.<cid>.*.*.*``, to the quorum queue
of its shard (device topics only: the alerts we publish to
``community/<cid>/alerts/<severity>`` must not come back to us). The shard is a
stable hash of the community id modulo the shard count, so every worker, every
deploy tool and every restart agrees without a table.

Why per-community bindings and not the consistent-hash exchange: that exchange
hashes the whole routing key (one device, not one community) unless the
publisher sets a header, and MQTT publishes carry none; a community's devices
would land on different shards and its rules (the two-detector fire rule)
would see only some of them.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "DEVICE_TOPICS",
    "EXCHANGE",
    "UNROUTED_EXCHANGE",
    "UNROUTED_QUEUE",
    "binding_key",
    "queue_name",
    "routing_key_to_topic",
    "shard_of",
    "topic_to_routing_key",
]

# Where RabbitMQ's MQTT plugin publishes (its default, mqtt.exchange).
EXCHANGE = "amq.topic"
# Every device topic (five levels), as amq.topic sees it: what the workers take.
DEVICE_TOPICS = "community.*.*.*.*"
# What amq.topic cannot route (a community with no binding yet) lands here, via an
# alternate-exchange policy, until a worker has bound the community and moved it on.
UNROUTED_QUEUE = "sc.unrouted"
UNROUTED_EXCHANGE = "sc.unrouted"
_SWAP = str.maketrans({"/": ".", ".": "/"})


def shard_of(community_id: str, shards: int) -> int:
    """Stable across processes and Python versions (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(community_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def queue_name(prefix: str, shard: int) -> str:
    return f"{prefix}.{shard:03d}"


def topic_to_routing_key(topic: str) -> str:
    """What RabbitMQ's MQTT plugin makes of an MQTT topic."""
    return topic.translate(_SWAP)


def routing_key_to_topic(routing_key: str) -> str:
    """The MQTT topic back from an ``amq.topic`` routing key (the swap is its own inverse)."""
    return routing_key.translate(_SWAP)


def binding_key(community_id: str) -> str:
    """Every topic of one community; ``*`` and ``#`` in an id would widen it, so refused."""
    if any(c in community_id for c in "*#"):
        raise ValueError(f"community id {community_id!r} contains a routing wildcard")
    return f"community.{topic_to_routing_key(community_id)}.*.*.*"
