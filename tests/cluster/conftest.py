"""A private 3-node RabbitMQ cluster for the cluster tests (marker ``cluster``).

Debian's rabbitmq-server must be installed (``make test-cluster`` installs it
when run as root); without it the tests fail with that reason, never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smartcommunity.rabbit_cluster import RabbitCluster
from tests.cluster.support import started


# One cluster for the whole session (about 40 s to start): `make test-cluster` runs
# in one process, and every test uses queues, communities and a database of its own.
@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    with started(
        lambda: RabbitCluster(tmp_path_factory.mktemp("rabbit"), size=3), "RabbitMQ"
    ) as cluster:
        yield cluster


@pytest.fixture
def cluster(rabbit: RabbitCluster) -> RabbitCluster:
    """The session's cluster with every node running (a test before may have killed one)."""
    dead = [n for n in rabbit.nodes if not n.alive]
    for node in dead:
        rabbit.start_node(node)
    if dead:
        rabbit.wait_clustered()
    return rabbit
