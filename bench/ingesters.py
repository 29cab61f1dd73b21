"""The ingesters under measurement as child processes, and the options that pick them.

``Child`` runs one: the platform (``smartcommunity run``), the reference
(``../shared/bench/peer_batched.py``, run unchanged) or ``baselines.py``; its
output is collected by a thread, which also sees it ready. CPU is user + system
time, peak memory ``VmHWM``. The reference prints nothing, so it is seen ready by
a probe message's row (``wait_reference_ready``). ``Profiler`` samples one with
py-spy.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg

from bench.fixture import (
    COMMUNITY,
    DEVICE_CLASS,
    PROBE_DEVICE,
    REFERENCE_TABLE,
    REPO,
    START_TIMEOUT_S,
    BenchError,
    scalar,
)
from bench.publisher import connected_client, mqtt_address

BASELINES = Path(__file__).with_name("baselines.py")
# The yardstick, run unchanged from beside the repository (never copied into it).
REFERENCE = REPO.parent / "shared" / "bench" / "peer_batched.py"
INGESTERS = ("reference", "platform", "batched", "naive")
# How often the reference's readiness probe publishes (``PROBE_DEVICE``'s row).
PROBE_EVERY_S = 0.2
STOP_TIMEOUT_S = 30.0
# The platform logs this at INFO on CONNACK (gateway.bridge); the baselines print READY.
PLATFORM_READY = re.compile(r"connected \(session present")
BASELINE_READY = re.compile(r"^ready$")
LOG_TAIL_LINES = 40
# py-spy's sampling rate with --py-spy: 250 Hz gives thousands of samples in a run.
PROFILE_RATE_HZ = 250
PROFILE_TOP = 15
# Inclusive shares are listed for these packages' functions: where the platform's time goes.
PROFILE_OWN_PACKAGES = ("core/", "gateway/", "ingest/", "alerts/", "bench/")


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


def process_cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


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
