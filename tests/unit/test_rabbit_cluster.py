"""Without Debian's RabbitMQ the cluster tests fail naming it; they never skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigurationError
from smartcommunity import rabbit_cluster


def test_a_missing_rabbitmq_is_an_error_that_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rabbit_cluster, "_BIN", (str(tmp_path / "nowhere"),))
    with pytest.raises(ConfigurationError, match="rabbitmq-server"):
        rabbit_cluster.RabbitCluster(tmp_path)
