"""The installer's whole path at fleet size: a CSV of 500 devices to 500 devices online.

One import and one export command against a running, locked-down Mosquitto; the
simulator then connects every device with its own exported credentials (a
connection each, under the exported ACL) and the pipeline, logged in as its
service account, stores what they say. Done when the API's fleet status counts
500 devices online. The figures are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from simulators.community import demo_devices
from smartcommunity.cli import main
from smartcommunity.secured_broker import SecuredMosquitto
from store.devices import fleet_status
from tests.integration.support import ROOT, pipeline_thread, stop_process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEET = 500
# One paho network thread per device connection: three processes of ~170 each.
PROCESSES = 3
ONLINE_TIMEOUT_S = 120.0


def _write_csv(path: Path, community: str) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ("id", "community_id", "device_class", "model", "name", "expected_interval_s",
             "building")
        )  # fmt: skip
        for n, d in enumerate(demo_devices(community_id=community, count=FLEET, seed=5)):
            writer.writerow(
                (d.id, d.community_id, d.device_class, d.model, d.name, d.expected_interval_s,
                 f"B{n % 10 + 1:02d}")
            )  # fmt: skip


def test_csv_of_500_to_500_online(
    fresh_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unique_id: str,
) -> None:
    url = fresh_database_url
    monkeypatch.setenv("SC_DATABASE_URL", url)
    monkeypatch.delenv("SC_MQTT_URL", raising=False)
    community = f"c{unique_id}"
    devices, creds, files = tmp_path / "devices.csv", tmp_path / "creds.csv", tmp_path / "mq"
    _write_csv(devices, community)
    assert main(["community", "create", community]) == 0
    assert main(["broker", "account", "add", "sc-pipeline", "--role", "pipeline"]) == 0
    pipeline_password = capsys.readouterr().out.splitlines()[-1]

    # The broker runs before the export, as a production one would: nothing may log in yet.
    files.mkdir()
    (files / "passwd").write_text("")
    (files / "acl").write_text("")
    with SecuredMosquitto(
        data_dir=tmp_path / "broker", password_file=files / "passwd", acl_file=files / "acl"
    ) as broker:
        started = time.monotonic()
        imported = main(["devices", "import", str(devices), "--credentials-out", str(creds)])
        import_s = time.monotonic() - started
        assert imported == 0, capsys.readouterr().err
        exported = main(["broker", "export", "--dir", str(files), "--reload-pid", str(broker.pid)])
        export_s = time.monotonic() - started - import_s
        assert exported == 0
        assert f"{FLEET} devices, 1 service accounts" in capsys.readouterr().out

        pipeline_url = broker.url_for("sc-pipeline", pipeline_password)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
        log = (tmp_path / "simulate.log").open("wb")
        with pipeline_thread(url, pipeline_url, f"pipe-{unique_id}", community):
            simulate_at = time.monotonic()
            simulator = subprocess.Popen(
                [
                    sys.executable, "-m", "smartcommunity.cli", "simulate",
                    "--roster", str(devices), "--credentials", str(creds),
                    "--processes", str(PROCESSES), "--mqtt-url", broker.url,
                    "--duration", str(ONLINE_TIMEOUT_S), "--progress-interval", "60",
                ],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                with psycopg.connect(url, autocommit=True) as conn:

                    def online() -> int:
                        status = fleet_status(conn, community, datetime.now(UTC), 0)
                        return status.by_connectivity["online"]

                    wait_for(lambda: online() == FLEET, ONLINE_TIMEOUT_S, f"{FLEET} online")
                    online_s = time.monotonic() - simulate_at
                    refused = conn.execute(
                        "SELECT count(*) FROM dead_letters WHERE topic LIKE %s",
                        (f"community/{community}/%",),
                    ).fetchone()
            finally:
                stop_process(simulator)
                log.close()
        assert refused == (0,)
    total_s = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\n{FLEET} devices: import {import_s:.2f} s, export + reload {export_s:.2f} s, "
            f"simulator start to all online {online_s:.1f} s; CSV to online {total_s:.1f} s"
        )
