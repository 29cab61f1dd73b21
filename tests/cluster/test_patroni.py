"""The database tier under faults: the Patroni primary killed under load.

Three PostgreSQL 15 nodes under Patroni (etcd, ``synchronous_mode`` strict) on
loopback; two ``smartcommunity worker`` processes and one ``smartcommunity api``
reach them through a libpq multi-host URL with ``target_session_attrs=read-write``
and nothing else. Devices of three communities publish through the RabbitMQ
cluster; the primary (Patroni and PostgreSQL) is killed with SIGKILL, as a lost
machine, and then one of the workers, so that the other takes its shards over
while there is no database. Afterwards the synchronous standby leads, the
survivor and the API work on it without a restart, every reading the broker
acknowledged is stored exactly once, and the confirmed fire whose two detector
reports straddle the failover is one alert.

Slow (a minute or two): marker ``cluster``, run by ``make test-cluster``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.shards import shard_of
from smartcommunity.cluster_rig import ROOT, poll, worker_metrics
from smartcommunity.patroni_cluster import PatroniCluster
from smartcommunity.rabbit_cluster import RabbitCluster, free_port
from tests.cluster.support import SHARDS, Load, explained, register, rig_on, settled, started

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

# Patroni's leader key lives 12 s (smartcommunity/patroni_cluster.py), then a
# standby is promoted; generous for a shared machine.
FAILOVER_S = 120.0


@pytest.fixture(scope="module")
def patroni() -> Iterator[PatroniCluster]:
    with started(lambda: PatroniCluster(size=3), "Patroni") as pg:
        yield pg


def _health(port: int) -> dict[str, object]:
    """The API's /health answer (200 or 503), or {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))
    except (OSError, ValueError):
        return {}


@contextmanager
def _api(url: str, tmp: Path) -> Iterator[int]:
    """``smartcommunity api`` on a free port, given the multi-host URL and nothing else."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
    env.update(SC_DATABASE_URL=url, SC_DATA_DIR=str(tmp / "api"))
    with (tmp / "api.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smartcommunity.cli", "api", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Generous: migrations, the pool and uvicorn start on a loaded 2-core machine.
        poll(lambda: bool(_health(port)), 180, "the API answering /health")
        yield port
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- api\n{(tmp / 'api.log').read_text(errors='replace')[-2500:]}"
        ) from exc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_primary_killed_under_load_nothing_acknowledged_is_lost(
    cluster: RabbitCluster, patroni: PatroniCluster, unique_id: str, tmp_path: Path
) -> None:
    url = patroni.url  # every node, libpq picks the writable one
    uid = unique_id[-8:]
    made = register(url, uid)
    with rig_on(cluster, url, uid, tmp_path, made) as rig, _api(url, tmp_path) as api:
        for i in range(2):
            rig.worker(i)
        for community in rig.communities:
            community.publisher.wait_connected()
        fire = rig.communities[0]
        with explained(rig), Load(rig.communities) as load:
            poll(lambda: rig.telemetry_rows() > 200, 120, "telemetry flowing through the workers")
            poll(lambda: _health(api).get("status") == "ok", 60, "the API healthy")
            # First detector of each building: a pre-alarm, written to the first primary.
            for community in rig.communities:
                community.event(community.detectors[0], "fire", "smoke_alarm")
            poll(lambda: len(rig.alerts("fire.confirmed", fire.id)) == 1, 120, "the pre-alarm")

            old, standby = patroni.leader(), patroni.sync_standby()
            assert old is not None
            assert standby is not None
            patroni.kill(old)
            # A worker dies too while there is no primary: the survivor takes its shards
            # over but cannot rebuild their rule state yet. It must give them back and
            # retry, not die (it did: a takeover's database error ended the process).
            victim, survivor = rig.workers
            victim.kill()
            # The second detector and an SOS arrive while there is no primary.
            for community in rig.communities:
                community.event(community.detectors[1], "fire", "smoke_alarm")
                community.event(community.wearables[0], "wearable", "sos_pressed")
            poll(lambda: patroni.leader() not in (None, old), FAILOVER_S, "a new primary")
            # Strict synchronous mode promotes only the node that had every commit.
            assert patroni.leader() is standby
            at_failover = rig.telemetry_rows()
            poll(
                lambda: rig.telemetry_rows() > at_failover + 300,
                180,
                "ingest going on on the new primary",
            )
            # The API's pool dropped the dead primary's connections and found the new
            # one (its /health names the killed worker stale, rightly, so not "ok").
            poll(lambda: _health(api).get("database") == "ok", 60, "the API's database back")
            load.stop.set()
        with settled(rig, load):
            assert survivor.alive, "the surviving worker died with the primary"
            assert worker_metrics(url, survivor.name)["shard_activation_failures_total"] >= 1
            # Every shard with traffic ends on the survivor (an idle shard has no
            # delivery to take over with); its figures are saved every few seconds.
            busy = {str(shard_of(c.id, SHARDS)) for c in rig.communities}

            def survivor_owns_all() -> bool:
                owned = worker_metrics(url, survivor.name).get("shard_active", {})
                return all(owned.get(shard) == 1 for shard in busy)

            poll(survivor_owns_all, 30, "the survivor active on every busy shard")
