"""A private 3-node RabbitMQ cluster for the cluster tests (marker ``cluster``).

Debian's rabbitmq-server must be installed (``make test-cluster`` installs it
when run as root); without it the tests fail with that reason, never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.errors import ConfigurationError, ServiceUnavailable
from smartcommunity.rabbit_cluster import RabbitCluster


# One cluster for the whole session (about 40 s to start): `make test-cluster` runs
# in one process, and every test uses queues, communities and a database of its own.
@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    try:
        cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit"), size=3)
    except ConfigurationError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        cluster.start()
    except ServiceUnavailable as exc:
        cluster.stop()
        pytest.fail(f"the RabbitMQ cluster did not start: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(rabbit: RabbitCluster) -> RabbitCluster:
    """The session's cluster with every node running (a test before may have killed one)."""
    dead = [n for n in rabbit.nodes if not n.alive]
    for node in dead:
        rabbit.start_node(node)
    if dead:
        rabbit.wait_clustered()
    return rabbit
