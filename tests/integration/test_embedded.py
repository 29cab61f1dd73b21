"""The embedded servers and the shipped broker configuration, against real processes."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psutil
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from smartcommunity.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    EmbeddedServerError,
    free_port,
)
from tests.servers import scratch_dir

pytestmark = pytest.mark.integration

# Every wait on a server is bounded by this; all of them take well under a second.
TIMEOUT_S = 10.0
# Above Mosquitto's default max_queued_messages of 1,000, which the shipped
# configuration raises.
BACKLOG = 1_500


class Session:
    """A paho client with a fixed id whose session outlives its connections."""

    def __init__(
        self, url: str, client_id: str, protocol: MQTTProtocolVersion = mqtt.MQTTv5
    ) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 1883
        self.protocol = protocol
        self.client_id = client_id
        self.client = self._new_client()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.session_present: bool | None = None
        self.connect_failure: str | None = None
        self._connected = threading.Event()
        self._closed = threading.Event()
        self._subscribed = threading.Event()

    def _new_client(self) -> mqtt.Client:
        """A paho client per connection: the broker keeps the session by client id, and
        paho's loop_start on a reused client leaks the previous socket pair."""
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            # MQTT 3.1.1 keeps the session this way; MQTT 5 at connect().
            clean_session=False if self.protocol != mqtt.MQTTv5 else None,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *_args: self._closed.set()
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda _c, _u, message: self.messages.put(message)
        return client

    def _on_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.connect_failure = str(reason)
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, _reasons: Any, _p: Any) -> None:
        self._subscribed.set()

    @contextmanager
    def connected(
        self, username: str | None = None, timeout: float = TIMEOUT_S
    ) -> Iterator[Session]:
        self._connected.clear()
        self._closed.clear()
        self.client = self._new_client()
        if username is not None:
            self.client.username_pw_set(username)
        if self.protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600  # 0 would end the session at disconnect
            self.client.connect(self.host, self.port, clean_start=False, properties=properties)
        else:
            self.client.connect(self.host, self.port)
        self.client.loop_start()
        try:
            deadline = time.monotonic() + timeout
            while not self._connected.wait(0.05):
                if self._closed.is_set() or time.monotonic() > deadline:
                    raise ConnectionError("the broker closed the connection without a CONNACK")
            if self.connect_failure is not None:
                raise ConnectionError(f"connection refused: {self.connect_failure}")
            yield self
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def subscribe(self, topic: str) -> None:
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(TIMEOUT_S), "no SUBACK"

    def receive(self, count: int) -> list[bytes]:
        payloads = []
        for _ in range(count):
            try:
                payloads.append(bytes(self.messages.get(timeout=TIMEOUT_S).payload))
            except queue.Empty:
                break
        return payloads


def publish(
    url: str, topic: str, payloads: list[bytes], protocol: MQTTProtocolVersion = mqtt.MQTTv5
) -> None:
    """Publish at QoS 1 and return once the broker has acknowledged every message."""
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
    client.username_pw_set("publisher")  # amqtt accepts only named clients
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(TIMEOUT_S)
            assert info.is_published(), f"message {info.mid} not acknowledged by the broker"
    finally:
        client.disconnect()
        client.loop_stop()


def queued_while_offline(url: str, unique_id: str, payloads: list[bytes]) -> str:
    """Publish ``payloads`` to the test's topic while its subscriber's session is
    disconnected, so the broker queues them for it; the subscriber's client id."""
    topic, client_id = f"test/{unique_id}/telemetry", f"sub-{unique_id}"
    session = Session(url, client_id)
    with session.connected():
        session.subscribe(topic)
    publish(url, topic, payloads)
    return client_id


def test_broker_keeps_offline_session_across_restart(
    private_broker: EmbeddedBroker, unique_id: str
) -> None:
    if private_broker.kind != "mosquitto":
        pytest.fail("the pipeline needs Mosquitto; amqtt persists nothing (see test below)")
    subscriber = queued_while_offline(private_broker.url, unique_id, [b"queued while offline"])

    private_broker.restart()

    session = Session(private_broker.url, subscriber)
    with session.connected():
        assert session.session_present, "the broker forgot the session over the restart"
        assert session.receive(1) == [b"queued while offline"]


def test_broker_keeps_saved_messages_across_sigkill(
    private_broker: EmbeddedBroker, unique_id: str
) -> None:
    subscriber = queued_while_offline(private_broker.url, unique_id, [b"saved before the crash"])
    # Mosquitto has no log: only what an autosave (every second) wrote survives.
    database = private_broker.data_dir / "mosquitto.db"
    published_at = time.time()
    deadline = time.monotonic() + TIMEOUT_S
    while not (database.exists() and database.stat().st_mtime > published_at):
        assert time.monotonic() < deadline, "mosquitto never saved its database"
        time.sleep(0.1)

    private_broker.kill()
    private_broker.start()

    session = Session(private_broker.url, subscriber)
    with session.connected():
        assert session.receive(1) == [b"saved before the crash"]


def test_shipped_config_queues_past_mosquitto_default_limit(
    private_broker: EmbeddedBroker, unique_id: str
) -> None:
    sent = [str(i).encode() for i in range(BACKLOG)]
    subscriber = queued_while_offline(private_broker.url, unique_id, sent)

    session = Session(private_broker.url, subscriber)
    with session.connected():
        received = session.receive(BACKLOG)
    assert len(received) == BACKLOG
    assert received == sent  # in order, nothing dropped
    assert "being dropped" not in private_broker.log_tail(lines=10_000)


def test_broker_fails_clearly_on_a_busy_port(tmp_path: Path, mqtt_url: str) -> None:
    busy = urlsplit(mqtt_url).port
    assert busy is not None
    with pytest.raises(EmbeddedServerError, match="already in use"):
        EmbeddedBroker(data_dir=tmp_path / "broker", port=busy).start()


def test_broker_takes_another_port_when_its_pick_is_taken(tmp_path: Path) -> None:
    """A port the broker picked itself and another process took before the broker
    bound it: the broker moves to another one (a race seen under a loaded test run)."""
    broker = EmbeddedBroker(data_dir=tmp_path / "broker")
    picked = broker.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", picked))
        squatter.listen()
        try:
            url = broker.start()
            assert broker.port != picked
            assert urlsplit(url).port == broker.port
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"moved-{picked}")
            client.connect("127.0.0.1", broker.port)
            client.disconnect()
        finally:
            broker.stop()


def test_amqtt_fallback_serves_mqtt_311_only(tmp_path: Path, unique_id: str) -> None:
    with EmbeddedBroker(data_dir=tmp_path / "amqtt", kind="amqtt") as broker:
        assert broker.kind == "amqtt"
        topic = f"test/{unique_id}/telemetry"
        # amqtt queues for an offline session only when the client sent a user name.
        session = Session(broker.url, f"sub-{unique_id}", protocol=mqtt.MQTTv311)
        with session.connected(username="pipeline"):
            session.subscribe(topic)
        publish(broker.url, topic, [b"queued"], protocol=mqtt.MQTTv311)
        with session.connected(username="pipeline"):
            assert session.receive(1) == [b"queued"]

        # An MQTT 5 CONNECT with properties, as the pipeline sends, is never
        # answered at all; without them amqtt answers "Unsupported protocol version".
        v5 = Session(broker.url, f"v5-{unique_id}")
        with pytest.raises(ConnectionError), v5.connected(timeout=2):
            pass


def test_postgres_stops_and_restarts_with_its_data(private_postgres: EmbeddedPostgres) -> None:
    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("show fsync").fetchone() == ("on",)
        conn.execute("create table kept (note text)")
        conn.execute("insert into kept values ('before the restart')")
    pid = private_postgres.pid
    assert pid is not None
    postmaster = psutil.Process(pid)
    backends = postmaster.children(recursive=True)
    assert backends, "a running postmaster has background processes"

    private_postgres.stop()

    assert not private_postgres.running
    left = [p for p in [postmaster, *backends] if _alive(p)]
    assert left == [], "processes outlived stop()"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_postgres.url, connect_timeout=2).close()

    private_postgres.start()
    with psycopg.connect(private_postgres.url) as conn:
        assert conn.execute("select note from kept").fetchall() == [("before the restart",)]


def test_postgres_keeps_committed_rows_across_sigkill(
    private_postgres: EmbeddedPostgres,
) -> None:
    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        conn.execute("create table kept (n int)")
        conn.execute("insert into kept select generate_series(1, 100)")

    private_postgres.kill()
    private_postgres.start()  # crash recovery replays the WAL

    with psycopg.connect(private_postgres.url) as conn:
        assert conn.execute("select count(*) from kept").fetchone() == (100,)


def test_postgres_reuses_an_existing_cluster() -> None:
    with scratch_dir("sc-test-pg-") as root:
        # A private parent, as a home directory is: run as root, the server
        # must still reach its cluster (it adds the search bit it needs).
        (root / "private").mkdir(mode=0o700)
        _reopen_cluster(root / "private" / "pg")


def _reopen_cluster(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir=data_dir) as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("create database demo")
        first_port = pg.port
    with EmbeddedPostgres(data_dir=data_dir, port=free_port()) as pg:
        assert pg.port != first_port
        with psycopg.connect(pg.url) as conn:
            names = conn.execute("select datname from pg_database").fetchall()
    assert ("demo",) in names


def test_database_fixtures_give_separate_databases(
    database_url: str, fresh_database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        session_db = conn.execute("select current_database()").fetchone()
    with psycopg.connect(fresh_database_url) as conn:
        fresh_db = conn.execute("select current_database()").fetchone()
        tables = conn.execute(
            "select count(*) from pg_tables where schemaname = 'public'"
        ).fetchone()
    assert session_db is not None
    assert session_db[0].startswith("sc_test_")
    assert fresh_db is not None
    assert fresh_db[0].startswith("sc_fresh_")
    assert tables == (0,)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
