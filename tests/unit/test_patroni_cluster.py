"""The Patroni rig's configuration: private, loopback, synchronous; a missing package named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from smartcommunity import patroni_cluster


def test_a_missing_patroni_is_an_error_that_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(patroni_cluster, "SEARCH_PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match="patroni"):
        patroni_cluster.PatroniCluster(tmp_path)


def test_nodes_are_private_synchronous_and_under_the_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The configuration alone: nothing is started, so no binaries are needed.
    monkeypatch.setattr(patroni_cluster, "find_patroni", lambda: ("patroni", "etcd"))
    cluster = patroni_cluster.PatroniCluster(tmp_path, size=3)
    ports = set()
    for node in cluster.nodes:
        config = json.loads((node.folder / "patroni.yml").read_text())
        pg = config["postgresql"]
        assert pg["listen"].startswith("127.0.0.1:")
        assert pg["data_dir"].startswith(str(tmp_path))
        assert pg["parameters"]["unix_socket_directories"].startswith(str(tmp_path))
        assert config["restapi"]["listen"].startswith("127.0.0.1:")
        dcs = config["bootstrap"]["dcs"]
        assert dcs["synchronous_mode"] is True
        assert dcs["synchronous_mode_strict"] is True
        assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]  # Patroni's rule
        ports |= {node.pg_port, node.api_port}
    assert len(ports) == 6
    assert 5432 not in ports
    assert cluster.url.endswith("?target_session_attrs=read-write")
    assert cluster.url.count("127.0.0.1:") == 3
