"""The listeners ``broker export`` writes, on a real Mosquitto that runs them as they
are: every client's id is its user name on the pipeline's loopback listener too, so
no account can take the pipeline's session (or a device's), and the pipeline's two
clients (subscriber and alert publisher) still live side by side under the binding.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest

from core.broker_acl import ALERTS_SUFFIX, ServiceRole, alerts_username
from core.dispatch_contract import control_room_topic
from core.registry import DeviceSpec
from core.settings import AlertSettings, GatewaySettings, IngestSettings, Settings
from core.topics import alert_topic, device_topic
from gateway.process import run_pipeline
from smartcommunity.cli import main
from smartcommunity.embedded import free_port
from smartcommunity.secured_broker import ExportedMosquitto
from store import schema
from store.devices import register_device
from tests.integration.support import wait_for
from tests.integration.test_broker_export import NOT_AUTHORIZED, TIMEOUT_S, Client, connect

pytestmark = pytest.mark.integration


@dataclass
class Exported:
    database_url: str
    community: str
    passwords: dict[str, str]
    pipeline_user: str
    api_user: str
    pipeline_port: int
    device_port: int
    listener_file: Path

    def url(self, user: str, password: str | None = None) -> tuple[str, int, str, str]:
        secret = self.passwords[user] if password is None else password
        services = {self.pipeline_user, alerts_username(self.pipeline_user), self.api_user}
        port = self.pipeline_port if user in services else self.device_port
        return ("127.0.0.1", port, user, secret)

    def connect(self, user: str, *, client_id: str = "", port: int = 0) -> Client:
        secret = self.passwords.get(user.removesuffix(ALERTS_SUFFIX))
        return connect(cast(Any, self), user, secret, client_id=client_id, port=port)

    @property
    def devices(self) -> list[str]:
        return sorted(u for u in self.passwords if u not in (self.pipeline_user, self.api_user))


@pytest.fixture
def exported(
    fresh_database_url: str,
    tmp_path: Path,
    unique_id: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Exported]:
    # A database of its own: the worker's shared one carries what other files did to
    # the built-in rules (Schemathesis changes them at random), and the SOS must alert.
    database_url = fresh_database_url
    schema.upgrade(database_url)
    monkeypatch.setenv("SC_DATABASE_URL", database_url)
    community, passwords = f"c{unique_id}", {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO communities (id, name) VALUES (%s, 'Listeners')", (community,))
        for n in range(2):
            spec = DeviceSpec(
                id=f"{unique_id}-d{n}", community_id=community, device_class="wearable"
            )
            outcome = register_device(conn, spec, visible=lambda _c: True, installed_by="test")
            assert isinstance(outcome, tuple), outcome
            passwords[spec.id] = outcome[1]
    pipeline_user, api_user = f"pipe-{unique_id}", f"api-{unique_id}"
    for user, role in ((pipeline_user, ServiceRole.PIPELINE), (api_user, ServiceRole.API)):
        assert main(["broker", "account", "add", user, "--role", role.value]) == 0
        passwords[user] = capsys.readouterr().out.splitlines()[-1]
    pipeline_port, device_port = free_port(), free_port()
    files = tmp_path / "mq"
    command = ["broker", "export", "--dir", str(files), "--no-tls"]
    command += ["--pipeline-listener", f"127.0.0.1:{pipeline_port}"]
    command += ["--device-listener", f"127.0.0.1:{device_port}"]
    assert main(command) == 0, capsys.readouterr().err
    listener_file = files / "conf.d" / "listeners.conf"
    with ExportedMosquitto(
        data_dir=tmp_path / "broker", conf_dir=listener_file.parent, port=pipeline_port
    ):
        yield Exported(
            database_url,
            community,
            passwords,
            pipeline_user,
            api_user,
            pipeline_port,
            device_port,
            listener_file,
        )


def _stored(url: str, device: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE device_id = %s", (device,))
        return int((row.fetchone() or (0,))[0])


def test_the_listener_file_binds_ids_on_both_listeners(exported: Exported) -> None:
    text = exported.listener_file.read_text(encoding="utf-8")
    blocks = text.split("\nlistener ")[1:]
    assert [b.splitlines()[0] for b in blocks] == [
        f"{exported.pipeline_port} 127.0.0.1",
        f"{exported.device_port} 127.0.0.1",
    ]
    assert all("use_username_as_clientid true" in b for b in blocks)
    assert "allow_anonymous false" in text


def test_no_account_takes_the_pipelines_id_on_its_listener(exported: Exported) -> None:
    """A device's credentials on the loopback listener, sending the pipeline's client
    id: connected as itself, and the pipeline stays connected and keeps receiving."""
    device = exported.devices[0]
    topic = device_topic(exported.community, "wearable", device, "telemetry")
    pipeline = exported.connect(exported.pipeline_user)
    try:
        assert pipeline.subscribe(f"community/{exported.community}/+/+/+") == 1
        attacker = exported.connect(
            device, client_id=exported.pipeline_user, port=exported.pipeline_port
        )
        try:
            assert attacker.connack == 0
            # Its own topic only, as itself; what it sends reaches the pipeline...
            assert attacker.publish(topic, b'{"seq": 1}') == 0
            wait_for(lambda: bool(pipeline.messages), TIMEOUT_S, "the message at the pipeline")
            # ...which was never disconnected, and still holds its subscription.
            assert not pipeline.disconnected.is_set()
            assert pipeline.messages == [(topic, b'{"seq": 1}')]
        finally:
            attacker.close()
    finally:
        pipeline.close()


def test_the_pipelines_two_clients_live_side_by_side(exported: Exported) -> None:
    """Subscriber and alert publisher, bound to two names: neither disconnects the other.
    The publisher may write alerts and nothing else."""
    alerts_user = alerts_username(exported.pipeline_user)
    pipeline = exported.connect(exported.pipeline_user)
    listener = exported.connect(exported.api_user)
    try:
        publisher = exported.connect(alerts_user)
        try:
            assert publisher.connack == 0
            assert listener.subscribe(f"community/{exported.community}/alerts/#") == 1
            topic = alert_topic(exported.community, "critical")
            assert publisher.publish(topic, b"{}") == 0
            wait_for(lambda: bool(listener.messages), TIMEOUT_S, "the alert at the listener")
            device_telemetry = device_topic(
                exported.community, "wearable", exported.devices[0], "telemetry"
            )
            assert publisher.publish(device_telemetry, b"{}") == NOT_AUTHORIZED
            # It reads nothing: of one message, the subscriber gets it and it does not.
            everything = f"community/{exported.community}/+/+/+"
            assert pipeline.subscribe(everything) == 1
            publisher.subscribe(everything)
            device = exported.connect(exported.devices[0])
            try:
                assert device.publish(device_telemetry, b'{"seq": 1}') == 0
            finally:
                device.close()
            wait_for(lambda: bool(pipeline.messages), TIMEOUT_S, "the message at the pipeline")
            assert publisher.messages == []
            assert not pipeline.disconnected.is_set()
            assert not publisher.disconnected.is_set()
        finally:
            publisher.close()
    finally:
        pipeline.close()
        listener.close()


def test_the_pipeline_runs_under_the_binding(exported: Exported, unique_id: str) -> None:
    """The real pipeline on the bound listener: telemetry is stored, and an SOS raises
    an alert that its publisher (the companion account) delivers."""
    url = (
        f"mqtt://{exported.pipeline_user}:{exported.passwords[exported.pipeline_user]}"
        f"@127.0.0.1:{exported.pipeline_port}"
    )
    settings = Settings(
        database_url=exported.database_url,
        mqtt_url=url,
        gateway=GatewaySettings(
            client_id=exported.pipeline_user,
            topic_filter=f"community/{exported.community}/+/+/+",
            bound_client_ids=True,
        ),
        ingest=IngestSettings(flush_interval_ms=50),
        alerts=AlertSettings(),
    )
    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_pipeline(settings, stop, ready=ready)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
            ready.set()

    listener = exported.connect(exported.api_user)
    thread = threading.Thread(target=target, name=f"pipeline-{unique_id}", daemon=True)
    thread.start()
    try:
        assert ready.wait(60)
        assert not errors, errors
        assert listener.subscribe(f"community/{exported.community}/alerts/#") == 1
        device = exported.devices[0]
        client = exported.connect(device)
        try:
            base = device_topic(exported.community, "wearable", device, "telemetry")
            payload = {"ts": 1_767_225_600_000, "seq": 1, "metrics": {"battery": 80}}
            assert client.publish(base, orjson.dumps(payload)) == 0
            sos = device_topic(exported.community, "wearable", device, "event")
            event = {"ts": 1_767_225_601_000, "seq": 2, "event": "sos_pressed", "data": {}}
            assert client.publish(sos, orjson.dumps(event)) == 0
        finally:
            client.close()
        wait_for(
            lambda: _stored(exported.database_url, device) == 1,
            TIMEOUT_S * 3,
            "the reading stored",
        )
        # The engine starts beside the writer: under a loaded suite it may take a while.
        wait_for(lambda: bool(listener.messages), TIMEOUT_S * 6, "the SOS alert published")
        assert listener.messages[0][0].startswith(f"community/{exported.community}/alerts/")
    finally:
        stop.set()
        thread.join(60)
        listener.close()
    assert not errors, errors


def test_the_api_reads_control_room_escalations_and_devices_do_not(exported: Exported) -> None:
    """The incident desk (the pipeline's account here) writes a control-room escalation;
    the API's account reads it; a device neither reads nor writes the topic."""
    topic = control_room_topic(exported.community)
    listener = exported.connect(exported.api_user)
    pipeline = exported.connect(exported.pipeline_user)
    device = exported.connect(exported.devices[0])
    try:
        assert listener.subscribe(topic) == 1
        device.subscribe(topic)
        assert device.publish(topic, b'{"event": "escalation"}') == NOT_AUTHORIZED
        assert pipeline.publish(topic, b'{"event": "escalation", "incident_id": 1}') == 0
        wait_for(lambda: bool(listener.messages), TIMEOUT_S, "the escalation at the API")
        assert listener.messages == [(topic, b'{"event": "escalation", "incident_id": 1}')]
        assert device.messages == []
    finally:
        device.close()
        pipeline.close()
        listener.close()
