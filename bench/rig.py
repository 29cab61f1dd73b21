"""The rig the benchmarks share: workload, scratch databases, brokers, ingester
processes, profiling and tables.

Each benchmark is a script of its own beside this module (``ingest.py``
throughput, ``latency.py`` publish -> row visible, ``burst.py`` memory under a
backlog, ``writer.py`` the writer's server cost, ``alerts.py``, ``query.py``);
what they measure alike is measured here, once:

- a fresh database per run (``sc_bench_<random>``, dropped afterwards) with the
  platform's schema and the devices registered, and the reference's table;
- a private Mosquitto with the shipped configuration per run;
- ingesters as child processes (``Child``): the platform (``smartcommunity
  run``), the reference (``../shared/bench/peer_batched.py``, run unchanged) and
  ``baselines.py``; CPU is user + system time, peak memory ``VmHWM``;
- the end of a run seen by an index probe for the last message's row, then
  confirmed with ``count(*)``; database CPU as the ingester's backends' time.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import paho.mqtt.client as mqtt
import psutil
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent
BASELINES = Path(__file__).with_name("baselines.py")
# The yardstick, run unchanged from beside the repository (never copied into it).
REFERENCE = REPO.parent / "shared" / "bench" / "peer_batched.py"
INGESTERS = ("reference", "platform", "batched", "naive")
# The reference writes its own table of the shape its README gives, with the same
# natural key as ``readings`` so that both pay for an index.
REFERENCE_TABLE = "peer_readings"
REFERENCE_DDL = (
    f"CREATE TABLE {REFERENCE_TABLE} (time timestamptz NOT NULL, device_id text NOT NULL,"
    " metric text NOT NULL, value float8, PRIMARY KEY (device_id, metric, time))"
)
# The reference prints nothing: it is ready once a probe message's row shows up.
PROBE_DEVICE = "probe"
PROBE_EVERY_S = 0.2
COMMUNITY = "bench"
DEVICE_CLASS = "wearable"
TOPIC_FILTER = "community/+/+/+/+"  # what the platform subscribes
METRICS_PER_MESSAGE = 3
# The last metric of each message; its row is what the end-of-run probe looks for.
LAST_METRIC = "battery"
# Long enough to outlive the wait between priming a session and the ingester's start.
SESSION_EXPIRY_S = 3600
# QoS 1 messages the publisher keeps unacknowledged: enough to hide the round trip.
PUBLISH_WINDOW = 2_000
# Probe period for the last row: a PK lookup costs the server microseconds, so
# this is the timing resolution, not a load.
PROBE_INTERVAL_S = 0.02
# A full count(*) is not free on a 2-core machine: only while the probe has
# already seen the last row and the count fell short.
COUNT_INTERVAL_S = 0.25
# How often progress (pg_stat_user_tables, cheap but a second late) is printed
# and checked for a stall.
PROGRESS_INTERVAL_S = 2.0
# A run whose table has not grown for this long has failed (its log tail is shown).
STALL_TIMEOUT_S = 60.0
# Process start, MQTT connect and SUBACK each come well within this.
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# The platform logs this at INFO on CONNACK (gateway.bridge); the baselines print READY.
PLATFORM_READY = re.compile(r"connected \(session present")
BASELINE_READY = re.compile(r"^ready$")
LOG_TAIL_LINES = 40
# The bench's own database sessions, left out of the ingester's database CPU.
BENCH_APP = "sc-bench"
# py-spy's sampling rate with --py-spy: 250 Hz gives thousands of samples in a run.
PROFILE_RATE_HZ = 250
PROFILE_TOP = 15
# Inclusive shares are listed for these packages' functions: where the platform's time goes.
PROFILE_OWN_PACKAGES = ("core/", "gateway/", "ingest/", "alerts/", "bench/")


class BenchError(RuntimeError):
    """A run could not be completed or measured; the message says why."""


@dataclass(frozen=True, slots=True)
class Workload:
    messages: int
    devices: int
    base_ms: int  # ts of message i is base_ms + i: unique per (device, ts)
    # The alert storm: battery uniform over 5-100 %, so with the old rule
    # pack nearly every reading crossed a battery threshold one way or the other.
    storm: bool = False

    def device_id(self, index: int) -> str:
        return f"w{index:05d}"

    def topic(self, index: int) -> str:
        return f"community/{COMMUNITY}/{DEVICE_CLASS}/{self.device_id(index)}/telemetry"

    def payload(self, i: int) -> bytes:
        return orjson.dumps(
            {
                # ISO 8601, as the reference ingester expects (it reads no epoch ms).
                "ts": (EPOCH + timedelta(milliseconds=self.base_ms + i)).isoformat(
                    timespec="milliseconds"
                ),
                "seq": i,
                # Healthy values: this measures ingest with the rule engine
                # evaluating every reading; what raising alerts costs is
                # bench/alerts.py's business.
                "metrics": {
                    "heart_rate": 55 + i % 60,
                    "spo2": 92.0 + (i % 80) / 10,
                    LAST_METRIC: 5 + (i * 7919) % 96 if self.storm else 30 + i % 71,
                },
            }
        )

    @property
    def rows(self) -> int:
        return self.messages * METRICS_PER_MESSAGE

    def last_row_key(self) -> tuple[str, str, datetime]:
        """(device_id, metric, ts) of the last message's last row."""
        last = self.messages - 1
        ts = EPOCH + timedelta(milliseconds=self.base_ms + last)
        return self.device_id(last % self.devices), LAST_METRIC, ts


@dataclass(slots=True)
class Result:
    ingester: str
    messages: int
    rows: int
    seconds: float
    cpu_s: float
    peak_rss_bytes: int
    publish_s: float
    db_cpu_s: float | None = None  # the ingester's PostgreSQL backends
    broker_cpu_s: float | None = None
    checks: list[str] = field(default_factory=list)
    ok: bool = True

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def cpu_ms_per_1k(self) -> float:
        return self.cpu_s * 1e6 / self.messages

    def per_1k(self, cpu_s: float | None) -> str:
        return "-" if cpu_s is None else f"{cpu_s * 1e6 / self.messages:.1f}"


# -- database -------------------------------------------------------------------


def _with_dbname(server_url: str, dbname: str) -> str:
    return urlsplit(server_url)._replace(path=f"/{dbname}").geturl()


@contextlib.contextmanager
def fresh_database(server_url: str, workload: Workload) -> Iterator[str]:
    """A new database with the platform's schema and the devices registered; dropped after."""
    from store import schema

    name = f"sc_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(server_url, name)
    try:
        schema.upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO communities (id, name) VALUES (%s, %s)", (COMMUNITY, "bench"))
            conn.execute(
                "INSERT INTO devices (id, community_id, device_class)"
                " SELECT 'w' || lpad(i::text, 5, '0'), %s, %s FROM generate_series(0, %s) AS i",
                (COMMUNITY, DEVICE_CLASS, workload.devices - 1),
            )
            conn.execute(REFERENCE_DDL)
            conn.execute("VACUUM ANALYZE devices")
            # Start each run without the previous run's dirty pages to write.
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("CHECKPOINT")
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def watch_until_committed(
    conn: psycopg.Connection[tuple[Any, ...]],
    workload: Workload,
    child: Child,
    *,
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
    kind: str = "platform",
) -> tuple[float, int]:
    """Wait until all rows are committed; return (monotonic time seen, final count).

    ``check`` is called on each round and may raise to end the wait (a failed publisher).
    """
    table, ts_column = ingester_table(kind)
    count_sql = f"SELECT count(*) FROM {table} WHERE device_id <> '{PROBE_DEVICE}'"
    probe_sql = (
        f"SELECT count(*) FROM {table} WHERE device_id = %s AND metric = %s AND {ts_column} = %s"
    )
    device_id, metric, ts = workload.last_row_key()
    expected = workload.rows
    start = time.monotonic()
    hard_deadline = start + timeout_s
    counting = False
    last_total, last_growth = -1, start
    next_progress = start + PROGRESS_INTERVAL_S
    while True:
        now = time.monotonic()
        if counting:
            count = scalar(conn, count_sql)
            seen = time.monotonic()
            if count >= expected:
                return seen, count
        elif scalar(conn, probe_sql, (device_id, metric, ts)):
            seen = time.monotonic()
            count = scalar(conn, count_sql)
            if count >= expected:
                return seen, count
            print(
                f"  last row committed with {count}/{expected} rows: counting on",
                file=sys.stderr,
            )
            counting = True
        if now >= next_progress:
            next_progress = now + PROGRESS_INTERVAL_S
            total = scalar(
                conn,
                # The platform's readings are partitioned: count the partitions too.
                "SELECT coalesce(sum(n_tup_ins), 0) FROM pg_stat_user_tables"
                " WHERE (relname = %s OR relname LIKE %s) AND schemaname NOT LIKE 'pg_temp%%'",
                (table, f"{table}\\_%"),
            )
            print(f"  {now - start:6.1f}s  ~{total} rows", file=sys.stderr)
            if total != last_total:
                last_total, last_growth = total, now
        child.check_alive()
        check()
        if now - last_growth > STALL_TIMEOUT_S:
            raise BenchError(f"no new rows for {STALL_TIMEOUT_S:.0f} s\n{child.tail()}")
        if now > hard_deadline:
            raise BenchError(f"not done after {timeout_s:.0f} s\n{child.tail()}")
        time.sleep(COUNT_INTERVAL_S if counting else PROBE_INTERVAL_S)


def backend_cpu(conn: psycopg.Connection[tuple[Any, ...]]) -> dict[int, float] | None:
    """CPU seconds so far of each client backend on this database but the bench's own;
    None when the server's processes cannot be read (not on this machine)."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND application_name <> %s",
        (BENCH_APP,),
    ).fetchall()
    found = {}
    for (pid,) in rows:
        try:
            times = psutil.Process(int(pid)).cpu_times()
        except psutil.Error:
            return None
        found[int(pid)] = times.user + times.system
    return found


def cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    if before is None or after is None:
        return None
    # A backend that connected within the window started from zero.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def process_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def scalar(conn: psycopg.Connection[tuple[Any, ...]], sql: str, params: Sequence[Any] = ()) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def ingester_table(kind: str) -> tuple[str, str]:
    """The table an ingester writes and its device-time column."""
    return (REFERENCE_TABLE, "time") if kind == "reference" else ("readings", "ts")


def verify(url: str, workload: Workload, kind: str) -> tuple[bool, list[str]]:
    """Exactly 3 rows per message, every seq, nothing dead-lettered."""
    if kind == "reference":  # no seq column: the key makes the count exact
        with psycopg.connect(url, autocommit=True) as conn:
            rows = scalar(
                conn,
                f"SELECT count(*) FROM {REFERENCE_TABLE} WHERE device_id <> %s",
                (PROBE_DEVICE,),
            )
        ok = rows == workload.rows
        return ok, [f"{kind}: rows {rows} (expected {workload.rows}): {'OK' if ok else 'FAILED'}"]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = scalar(conn, "SELECT count(*) FROM readings")
        seqs = scalar(conn, "SELECT count(DISTINCT seq) FROM readings")
        dead = scalar(conn, "SELECT count(*) FROM dead_letters")
    ok = rows == workload.rows and seqs == workload.messages and dead == 0
    checks = [
        f"{kind}: rows {rows} (expected {workload.rows}), distinct seq {seqs} "
        f"(expected {workload.messages}), dead letters {dead}: {'OK' if ok else 'FAILED'}"
    ]
    return ok, checks


# -- MQTT -------------------------------------------------------------------------


def mqtt_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


def connected_client(
    url: str, client_id: str, *, clean_start: bool, v5: bool = True, max_inflight: int = 20
) -> mqtt.Client:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else clean_start,
    )
    client.max_inflight_messages_set(max_inflight)
    connected = threading.Event()
    refused: list[ReasonCode] = []

    def on_connect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(reason)
        connected.set()

    client.on_connect = on_connect
    host, port = mqtt_address(url)
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 0 if clean_start else SESSION_EXPIRY_S
        client.connect(host, port, keepalive=60, clean_start=clean_start, properties=properties)
    else:
        client.connect(host, port, keepalive=60)
    client.loop_start()
    if not connected.wait(START_TIMEOUT_S) or refused:
        client.loop_stop()
        raise BenchError(f"MQTT connection to {url} failed: {refused or 'no CONNACK'}")
    return client


def prime_session(url: str, client_id: str, *, v5: bool) -> None:
    """Leave a persistent QoS 1 subscription for ``client_id`` at the broker, as the
    ingester itself would on its first start."""
    client = connected_client(url, client_id, clean_start=False, v5=v5)
    subscribed = threading.Event()
    client.on_subscribe = lambda *_args: subscribed.set()
    try:
        if v5:
            client.subscribe(TOPIC_FILTER, options=SubscribeOptions(qos=1))
        else:
            client.subscribe(TOPIC_FILTER, qos=1)
        if not subscribed.wait(START_TIMEOUT_S):
            raise BenchError("no SUBACK while priming the session")
    finally:
        client.disconnect()
        client.loop_stop()


def publish(url: str, workload: Workload, *, timeout_s: float) -> float:
    """Publish every message at QoS 1 and wait for all PUBACKs; return the seconds taken."""
    client = connected_client(
        url, f"sc-bench-pub-{secrets.token_hex(4)}", clean_start=True, max_inflight=0
    )
    done = threading.Condition()
    acked = 0
    failures: list[str] = []

    def on_publish(_c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        nonlocal acked
        with done:
            acked += 1
            # 0x10 "no matching subscribers" means no session holds the message.
            if reason.is_failure or reason.value == 0x10:
                failures.append(str(reason))
            done.notify_all()

    client.on_publish = on_publish
    topics = [workload.topic(d) for d in range(workload.devices)]
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        for i in range(workload.messages):
            # Our own window: paho's (max_inflight_messages) rescans every message in
            # flight on each PUBACK, which made publishing CPU-bound at ~4k/s. Once
            # full, wait for half of it, not for each PUBACK (a wake-up per message).
            if i - acked >= PUBLISH_WINDOW:
                with done:
                    while i - acked > PUBLISH_WINDOW // 2:
                        if not done.wait(max(0.0, deadline - time.monotonic())):
                            raise BenchError(f"publishing: {acked}/{i} acked at the deadline")
            info = client.publish(topics[i % workload.devices], workload.payload(i), qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BenchError(f"publish {i} failed: {mqtt.error_string(info.rc)}")
        with done:
            while acked < workload.messages:
                if not done.wait(max(0.0, deadline - time.monotonic())):
                    raise BenchError(f"publishing: {acked}/{workload.messages} acked in time")
        if failures:
            raise BenchError(f"{len(failures)} publishes refused, first: {failures[0]}")
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


# -- ingester processes ---------------------------------------------------------------


class Child:
    """An ingester process: its output collected by a thread, its readiness seen there."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], ready: re.Pattern[str]):
        self.name = name
        self.command = command
        self._ready_pattern = ready
        self.ready = threading.Event()
        self.ready_at = 0.0
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.process = psutil.Process(self.proc.pid)
        self._reader = threading.Thread(target=self._read, name=f"{name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._lines.append(line)
            if not self.ready.is_set() and self._ready_pattern.search(line):
                self.ready_at = time.monotonic()
                self.ready.set()

    def wait_ready(self, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while not self.ready.wait(0.05):
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{self.name} not connected after {timeout_s:.0f} s\n{self.tail()}"
                )
        return self.ready_at

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self._reader.join(1.0)
            raise BenchError(
                f"{self.name} exited with status {self.proc.returncode}\n{self.tail()}"
            )

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def peak_rss_bytes(self) -> int:
        """VmHWM: the most resident memory the process ever had (Linux)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text(encoding="ascii")
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) * 1024 if match else self.process.memory_info().rss

    def tail(self) -> str:
        return "\n".join(f"  | {line}" for line in self._lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(
                    f"  {self.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; killing it",
                    file=sys.stderr,
                )
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        self._reader.join(STOP_TIMEOUT_S)


def clean_env() -> dict[str, str]:
    # The bench decides the platform's configuration; nothing leaks in from the shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_ingester(
    kind: str, *, mqtt_url: str, database_url: str, client_id: str, args: argparse.Namespace
) -> Child:
    env = clean_env()
    if kind == "reference":
        host, port = mqtt_address(mqtt_url)
        env |= {
            "MQTT_HOST": host,
            "MQTT_PORT": str(port),
            "DB_URL": database_url,
            "DB_TABLE": REFERENCE_TABLE,
        }
        return Child(kind, [sys.executable, str(REFERENCE)], env, re.compile(r"(?!)"))
    if kind == "platform":
        env |= {
            "SC_DATABASE_URL": database_url,
            "SC_MQTT_URL": mqtt_url,
            "SC_GATEWAY__CLIENT_ID": client_id,
        }
        if args.batch_size is not None:
            env["SC_INGEST__BATCH_SIZE"] = str(args.batch_size)
        env["SC_ALERTS__ENABLED"] = "true" if args.rules == "on" else "false"
        for item in args.platform_env:
            key, _, value = item.partition("=")
            env[key] = value
        command = [sys.executable, "-m", "smartcommunity.cli", "run"]
        return Child(kind, command, env, PLATFORM_READY)
    command = [
        sys.executable,
        str(BASELINES),
        kind,
        "--mqtt-url",
        mqtt_url,
        "--database-url",
        database_url,
        "--client-id",
        client_id,
        "--protocol",
        args.baseline_protocol,
    ]
    return Child(kind, command, env, BASELINE_READY)


# -- profiling (optional) -----------------------------------------------------------------


class Profiler:
    """py-spy sampling one ingester for the timed window; a profile run is not a measurement."""

    def __init__(self, py_spy: str, pid: int, output: Path) -> None:
        self.output = output
        output.parent.mkdir(parents=True, exist_ok=True)
        command = [py_spy, "record", "--pid", str(pid), "--nonblocking", "--threads", "--gil"]
        command += ["--rate", str(PROFILE_RATE_HZ), "--format", "raw", "--output", str(output)]
        self.proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def finish(self) -> str:
        """Wait for py-spy to write its file (it stops when the ingester exits); summarise."""
        try:
            _, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            _, err = self.proc.communicate(timeout=STOP_TIMEOUT_S)
        if not self.output.exists():
            return f"py-spy wrote no profile: {err.decode(errors='replace').strip()[-500:]}"
        return summarise_profile(self.output)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    else:
        file = file.removeprefix(f"{REPO}/")
    return f"{match['func']} ({file})"


def summarise_profile(path: Path, top: int = PROFILE_TOP) -> str:
    """Self and inclusive sample shares per function, from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_frame_name(f) for f in frames[1:]]
        total += count
        threads[thread] += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if total == 0:
        return "no samples"
    lines = [
        f"{total} samples; by thread: "
        + ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in threads.most_common(4))
    ]
    lines.append("  self %   incl %  function")
    names = [n for n, _ in own.most_common(top)]
    names += [
        n
        for n, _ in inclusive.most_common(3 * top)
        if n not in names and n.split(" (", 1)[-1].startswith(PROFILE_OWN_PACKAGES)
    ][:top]
    for name in names:
        lines.append(
            f"  {100 * own[name] / total:6.1f}  {100 * inclusive[name] / total:6.1f}  {name}"
        )
    return "\n".join(lines)


def wait_reference_ready(
    mqtt_url: str, monitor: psycopg.Connection[tuple[Any, ...]], child: Child
) -> None:
    """Publish a probe message until the reference has written its row."""
    client = connected_client(mqtt_url, f"sc-bench-probe-{secrets.token_hex(4)}", clean_start=True)
    topic = f"community/{COMMUNITY}/{DEVICE_CLASS}/{PROBE_DEVICE}/telemetry"
    deadline = time.monotonic() + START_TIMEOUT_S
    sent = 0
    try:
        while not scalar(
            monitor,
            f"SELECT count(*) FROM {REFERENCE_TABLE} WHERE device_id = %s",
            (PROBE_DEVICE,),
        ):
            child.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"reference wrote no probe row\n{child.tail()}")
            # A time of its own for each probe: the key refuses a second row, and a
            # refused COPY would end the reference's writer thread.
            ts = (datetime(2001, 1, 1, tzinfo=UTC) + timedelta(milliseconds=sent)).isoformat()
            body = orjson.dumps({"ts": ts, "seq": sent, "metrics": {"battery": 1}})
            client.publish(topic, body, qos=1)
            sent += 1
            time.sleep(PROBE_EVERY_S)
    finally:
        client.disconnect()
        client.loop_stop()


def alert_summary(url: str) -> str:
    """What the rule engine made of the run: alerts per rule, and the most per subject."""
    with psycopg.connect(url, autocommit=True) as conn:
        per_rule = conn.execute(
            "SELECT rule_id, count(*), max(occurrences) FROM alerts GROUP BY rule_id ORDER BY 1"
        ).fetchall()
        worst = scalar(
            conn,
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM alerts"
            " GROUP BY rule_id, subject) AS s",
        )
    rules = ", ".join(f"{r} {n} (max occurrences {o})" for r, n, o in per_rule) or "none"
    return f"platform alerts: {rules}; at most {worst} alert(s) per (rule, subject)"


def publish_into(
    url: str,
    workload: Workload,
    timeout_s: float,
    seconds: list[float],
    errors: list[BaseException],
) -> None:
    try:
        seconds.append(publish(url, workload, timeout_s=timeout_s))
    except BaseException as exc:  # noqa: BLE001 - handed to the measuring thread
        errors.append(exc)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- report -------------------------------------------------------------------------------


def median_result(runs: Sequence[Result]) -> Result:
    """The run with the median throughput (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: r.msgs_per_s)
    return ordered[(len(ordered) - 1) // 2]


def summarise(results: Sequence[Result]) -> list[Result]:
    """One result per ingester, in first-run order: the median run of its repeats."""
    kinds = list(dict.fromkeys(r.ingester for r in results))
    return [
        median_result(
            [r for r in results if r.ingester == k and r.ok]
            or [r for r in results if r.ingester == k]
        )
        for k in kinds
    ]


def format_table(results: Sequence[Result], reference: Sequence[Result]) -> str:
    yardstick = "reference" if any(r.ingester == "reference" for r in reference) else "batched"
    runs = [r.msgs_per_s for r in reference if r.ingester == yardstick and r.ok]
    base = statistics.median(runs) if runs else None
    header = (
        f"{'ingester':<10} {'messages':>8} {'rows':>8} {'seconds':>7} {'msgs/s':>7} "
        f"{'rows/s':>7} {'CPU ms/1k':>9} {'peak RSS MB':>11} {'ratio':>10} "
        f"{'DB ms/1k':>8} {'broker ms/1k':>12}  check"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        ratio = f"{r.msgs_per_s / base:.2f}x" if base else "-"
        lines.append(
            f"{r.ingester:<10} {r.messages:>8} {r.rows:>8} {r.seconds:>7.2f} "
            f"{r.msgs_per_s:>7.0f} {r.rows_per_s:>7.0f} {r.cpu_ms_per_1k:>9.1f} "
            f"{r.peak_rss_bytes / 2**20:>11.1f} {ratio:>10} "
            f"{r.per_1k(r.db_cpu_s):>8} {r.per_1k(r.broker_cpu_s):>12}  "
            f"{'OK' if r.ok else 'FAILED'}"
        )
    return "\n".join(lines)


def versions(server_url: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    pg = row[0] if row else "?"
    mosq: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        mosq = subprocess.run(
            [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.splitlines()
    return (
        f"PostgreSQL {pg}, {mosq[0] if mosq else 'mosquitto ?'}, Python "
        f"{sys.version.split()[0]}, paho-mqtt {metadata.version('paho-mqtt')}, "
        f"psycopg {psycopg.__version__}, "
        f"{os.cpu_count()} CPUs"
    )


# -- command line -------------------------------------------------------------------------


def ingester_arguments(parser: argparse.ArgumentParser, *, only: str) -> None:
    """The options every benchmark that starts ingesters takes."""
    parser.add_argument("--devices", type=int, default=10_000, help="device topics")
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="server on which a scratch database is created and dropped for each run",
    )
    parser.add_argument(
        "--only",
        default=only,
        help=f"comma-separated ingesters of {','.join(INGESTERS)}, run in this order",
    )
    parser.add_argument(
        "--rules",
        choices=["off", "on"],
        default="off",
        help="the platform's rule engine (on: the default rule pack)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each ingester, interleaved; the median run is reported",
    )
    parser.add_argument(
        "--baseline-protocol",
        choices=["5", "3.1.1"],
        default="5",
        help="MQTT version of the baselines (the platform speaks 5 to Mosquitto)",
    )
    parser.add_argument("--batch-size", type=int, help="SC_INGEST__BATCH_SIZE for the platform")
    parser.add_argument(
        "--platform-env",
        action="append",
        default=[],
        metavar="SC_KEY=VALUE",
        help="extra environment for the platform (repeatable)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one run may take at most"
    )


def ingester_kinds(args: argparse.Namespace) -> list[str]:
    """``--only`` checked: known ingesters, and the reference present if asked for."""
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    unknown = set(kinds) - set(INGESTERS)
    if unknown or not kinds:
        raise SystemExit(f"--only takes some of {','.join(INGESTERS)}")
    if args.devices < 1 or args.repeat < 1:
        raise SystemExit("--devices and --repeat must be positive")
    if "reference" in kinds and not REFERENCE.is_file():
        raise SystemExit(
            f"the reference ingester is missing: expected {REFERENCE} (../shared/bench/"
            "peer_batched.py beside the repository); without it there is no ratio to give."
            " Run with --only platform,batched to measure against bench/baselines.py instead."
        )
    return kinds
