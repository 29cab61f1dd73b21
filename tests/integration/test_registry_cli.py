"""The installer's command line: communities, CSV import, lifecycle, users, tokens, broker
export, and the commissioning check against a real broker and pipeline."""

from __future__ import annotations

import csv
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.passwords import verify_password
from core.topics import device_topic
from smartcommunity.cli import main
from tests.integration.support import Publisher, pipeline_thread, telemetry

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SC_DATABASE_URL", database_url)
    monkeypatch.delenv("SC_MQTT_URL", raising=False)
    return database_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _one(url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


def test_installer_workflow(cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    community = unique("c")
    assert run(capsys, "community", "create", community, "--kind", "rural")[0] == 0
    assert run(capsys, "community", "create", community)[0] == 1

    devices = tmp_path / "devices.csv"
    ids = [unique("w"), unique("f")]
    devices.write_text(
        "id,community_id,device_class,expected_interval_s,building,floor,unit\n"
        f"{ids[0]},{community},wearable,60,B1,2,B1-0201\n"
        f"{ids[1]},{community},fire,300,B1,,\n"
        f"bad id,{community},fire,300,,,\n"
        f"{unique('x')},{community},toaster,300,,,\n"
    )
    creds = tmp_path / "creds.csv"
    status, _, err = run(capsys, "devices", "import", str(devices), "--credentials-out", str(creds))
    assert status == 1
    assert f"{devices}:4: id: use 1-64 letters" in err
    assert f"{devices}:5: device_class: unknown device class 'toaster'" in err
    assert "2 bad rows: nothing imported" in err
    assert not creds.exists()
    assert _one(cli, "SELECT count(*) FROM devices WHERE community_id = %s", community) == 0

    status, _, err = run(
        capsys,
        "devices",
        "import",
        str(devices),
        "--credentials-out",
        str(creds),
        "--skip-invalid",
    )
    assert status == 0, err
    assert "imported 2 devices, skipped 2 bad rows, created 1 buildings and 1 units" in err
    assert creds.stat().st_mode & 0o777 == 0o600
    with creds.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["device_id"] for r in rows] == ids
    stored = _one(cli, "SELECT mqtt_password_hash FROM devices WHERE id = %s", ids[0])
    assert verify_password(rows[0]["password"], stored)
    assert _one(cli, "SELECT installed_by FROM devices WHERE id = %s", ids[0]).startswith("cli:")

    status, out, _ = run(capsys, "devices", "list", "--community", community)
    assert status == 0
    assert ids[0] in out
    assert "never_seen" in out
    status, out, _ = run(capsys, "devices", "show", ids[0])
    assert "B1/B1-0201" not in out  # shown as separate fields
    assert "unit:" in out
    assert "B1-0201" in out

    assert run(capsys, "devices", "maintenance", ids[1])[1].strip() == f"{ids[1]}: maintenance"
    assert run(capsys, "devices", "update", ids[1], "--name", "Stairwell")[0] == 0
    assert _one(cli, "SELECT name FROM devices WHERE id = %s", ids[1]) == "Stairwell"
    status, out, err = run(capsys, "devices", "rotate", ids[0])
    assert status == 0
    new_password = out.splitlines()[1].split(",")[2]
    stored = _one(cli, "SELECT mqtt_password_hash FROM devices WHERE id = %s", ids[0])
    assert verify_password(new_password, stored)
    assert run(capsys, "devices", "decommission", ids[0])[0] == 0
    assert run(capsys, "devices", "rotate", ids[0])[0] == 1
    status, out, _ = run(capsys, "devices", "status", community)
    assert status == 0
    assert "1 devices" in out  # the decommissioned one no longer counts

    status, out, err = run(capsys, "devices", "register", unique("d"), "--community", community,
                           "--class", "access", "--credentials-out", "-")  # fmt: skip
    assert status == 0
    assert out.startswith("device_id,username,password\n")
    assert "shown once" in err

    # Who did it: the audit log names the CLI user.
    actors = _one(
        cli,
        "SELECT array_agg(DISTINCT actor) FROM audit_log"
        " WHERE entity = 'device' AND entity_id = %s",
        ids[0],
    )
    assert len(actors) == 1
    assert actors[0].startswith("cli:")


def test_users_and_tokens(cli: str, capsys: pytest.CaptureFixture[str]) -> None:
    community = unique("c")
    run(capsys, "community", "create", community)
    name = unique("alice")
    status, out, _ = run(
        capsys, "user", "create", name, "--role", "installer", "--community", community
    )
    assert status == 0
    assert f"installer of {community}" in out
    assert run(capsys, "user", "create", unique("x"), "--role", "viewer")[0] == 1  # no scope
    status, out, _ = run(capsys, "token", "create", "alice-laptop", "--user", name)
    assert status == 0
    assert out.startswith("sc_")
    # The old form still works and belongs to the built-in admin.
    status, out, _ = run(capsys, "token", "create", "legacy")
    assert status == 0
    assert out.startswith("sc_")
    bot = unique("bot")
    status, _, _ = run(capsys, "token", "create", bot, "--role", "viewer", "--community", community)
    assert status == 0
    status, out, _ = run(capsys, "token", "list")
    assert "alice-laptop" in out
    assert name in out
    assert "admin" in out
    status, out, _ = run(capsys, "user", "update", name, "--role", "operator", "--disable")
    assert "(disabled)" in out
    status, out, _ = run(capsys, "user", "list")
    assert bot in out


def test_broker_export(cli: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    community = unique("c")
    run(capsys, "community", "create", community)
    device = unique("d")
    run(capsys, "devices", "register", device, "--community", community, "--class", "fire")
    account = unique("pipe")
    status, out, _ = run(capsys, "broker", "account", "add", account, "--role", "pipeline")
    assert status == 0
    password = out.strip()
    assert run(capsys, "broker", "account", "add", device, "--role", "api")[0] == 1  # a device id
    status, out, _ = run(capsys, "broker", "export", "--dir", str(tmp_path / "mq"))
    assert status == 0, out
    passwd = (tmp_path / "mq" / "passwd").read_text()
    line = next(x for x in passwd.splitlines() if x.startswith(account + ":"))
    assert verify_password(password, line.split(":", 1)[1])
    assert f"user {device}\n" in (tmp_path / "mq" / "acl").read_text()
    assert run(capsys, "broker", "export")[0] == 1  # where to?
    status, _, err = run(
        capsys, "broker", "export", "--dir", str(tmp_path), "--reload-pid", "999999999"
    )
    assert status == 1
    assert "no process 999999999" in err


def test_commissioning_check(
    cli: str, mqtt_url: str, capsys: pytest.CaptureFixture[str], unique_id: str
) -> None:
    community = f"c{unique_id}"
    run(capsys, "community", "create", community)
    good, wrong = f"{unique_id}-w1", f"{unique_id}-f1"
    run(capsys, "devices", "register", good, "--community", community, "--class", "wearable")
    run(capsys, "devices", "register", wrong, "--community", community, "--class", "fire")
    capsys.readouterr()
    results: dict[str, int] = {}

    def check(device: str) -> None:
        results[device] = main(
            ["devices", "check", device, "--timeout", "15", "--mqtt-url", mqtt_url]
        )

    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    with pipeline_thread(cli, mqtt_url, f"pipe-{unique_id}", community):
        for device, device_class in ((good, "wearable"), (wrong, "wearable")):
            thread = threading.Thread(target=check, args=(device,))
            thread.start()
            n = 0
            while thread.is_alive() and n < 50:  # until the check has subscribed and heard one
                time.sleep(0.3)
                topic = device_topic(community, device_class, device, "telemetry")
                publisher.publish(topic, telemetry(n, int(time.time() * 1000)))
                n += 1
            thread.join(20)
            assert not thread.is_alive()
    publisher.close()
    out = capsys.readouterr().out
    assert results == {good: 0, wrong: 1}, out
    assert "accepted: 3 readings" in out
    assert "stored by the pipeline" in out
    assert "commissioned" in out
    assert f"registered in {community!r} as 'fire': fix the device's topic" in out
