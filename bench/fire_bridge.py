"""The GB/T 26875.3 fire bridge: frames per second from many UITDs, and fire alarm
frame -> alert on the API's live stream.

    .venv/bin/python bench/fire_bridge.py [--uitds 1000] [--duration 20] [--alarms 40]

Runs against a fresh database on ``--database-url``'s server (dropped afterwards)
and the broker at ``--mqtt-url``, with ``smartcommunity run`` (pipeline and rule
engine), ``smartcommunity api`` and ``smartcommunity fire-bridge`` as processes.
``--uitds`` simulated UITDs (one detector each) connect over TCP from this
process.

1. Throughput: every UITD sends analog-value frames (type 3, one temperature
   each) in send/confirm mode, the next only after the previous one's confirm, so
   every frame counted was committed by the pipeline before it was confirmed.
   Frames per second = confirmed frames / seconds.
2. Latency: ``--alarms`` fire alarms (type 2, fire bit) on detectors of different
   UITDs, 0.25 s apart, while the other UITDs send their everyday heartbeats
   (every ``--heartbeat`` s, 20 s as in the field): from the frame leaving the
   UITD to the critical alert arriving on ``/api/v1/alerts/stream`` (SSE), p50
   and p99. Also frame -> confirm.

One machine: the simulated UITDs, the bridge, the pipeline, PostgreSQL and the
broker share its cores, which bounds the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fixture import read_alert_stream
from bench.report import quantile
from bench.scratch import scratch_database
from core.gbt26875 import Command
from core.gbt26875_units import ComponentAnalog
from firebridge.registry import map_point, register_uitd
from simulators.uitd import FIRE, NORMAL, Detector, SimulatedUitd
from smartcommunity.embedded import free_port
from store import schema

ROOT = Path(__file__).resolve().parents[1]
COMMUNITY = "bench-fb"
START_TIMEOUT_S = 90.0
DETECTOR = Detector(zone=1, position=1, component_type=30)  # a heat detector


class BenchError(RuntimeError):
    """The run could not be completed or measured; the message says why."""


class Child:
    """A service process; its output kept, readiness seen in it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], ready: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._pattern = re.compile(ready)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smartcommunity.cli", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if self._pattern.search(line):
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(START_TIMEOUT_S):
            tail = "".join(self.lines[-20:])
            raise BenchError(f"{self.name} did not start:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def fresh_database(server_url: str, uitds: int) -> Iterator[tuple[str, list[bytes]]]:
    with scratch_database(server_url, "sc_bench_fb") as name:
        url = urlsplit(server_url)._replace(path=f"/{name}").geturl()
        schema.upgrade(url)
        addresses = []
        with psycopg.connect(url) as conn:  # one transaction for the lot, committed at the end
            conn.execute("INSERT INTO communities (id, name) VALUES (%s, 'bench')", (COMMUNITY,))
            for i in range(uitds):
                address = (0xB0_0000_0000 + i).to_bytes(6, "little")
                uitd_id = f"fb-{i:05d}"
                register_uitd(
                    conn,
                    device_id=uitd_id,
                    community_id=COMMUNITY,
                    address=address,
                    building=f"b{i}",
                    heartbeat_s=600,
                )
                map_point(
                    conn,
                    uitd_id=uitd_id,
                    device_id=f"{uitd_id}-heat",
                    system_type=1,
                    system_address=1,
                    zone=DETECTOR.zone,
                    position=DETECTOR.position,
                    component_type=DETECTOR.component_type,
                )
                addresses.append(address)
        yield url, addresses


def _stream(
    base: str, token: str, found: list[tuple[float, dict[str, Any]]], ready: threading.Event
) -> None:
    try:
        read_alert_stream(base, token, found, ready)
    except httpx.HTTPError:
        return  # the API stopped at the end of the run


async def _load(uitds: list[SimulatedUitd], stop: asyncio.Event, counts: list[int]) -> None:
    base = datetime.now(UTC) - timedelta(hours=3)

    async def one(index: int, uitd: SimulatedUitd) -> None:
        n = 0
        while not stop.is_set():
            # A new second per frame: each reading is a new row, as a replayed buffer is.
            label = uitd.label(base + timedelta(seconds=n))
            obj = ComponentAnalog(1, 1, 30, DETECTOR.address, 3, 200 + n % 50, label)
            if await uitd.send_unit([obj]) == Command.CONFIRM:
                counts[index] += 1
            n += 1

    await asyncio.gather(*(one(i, u) for i, u in enumerate(uitds)))


async def _heartbeats(uitds: list[SimulatedUitd], every_s: float, stop: asyncio.Event) -> None:
    """The everyday load: each UITD's heartbeat, spread over the interval."""

    async def one(index: int, uitd: SimulatedUitd) -> None:
        await asyncio.sleep(every_s * index / len(uitds))
        while not stop.is_set():
            await uitd.heartbeat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)

    await asyncio.gather(*(one(i, u) for i, u in enumerate(uitds)))


async def _alarm(uitd: SimulatedUitd, confirms: list[float]) -> None:
    t0 = time.monotonic()
    if await uitd.send_unit([uitd.component(DETECTOR, NORMAL | FIRE)]) == Command.CONFIRM:
        confirms.append(time.monotonic() - t0)


async def _run(
    port: int,
    addresses: list[bytes],
    args: argparse.Namespace,
    streamed: list[tuple[float, dict[str, Any]]],
) -> dict[str, Any]:
    uitds = [
        SimulatedUitd("127.0.0.1", port, a, confirm_timeout_s=10.0, retries=0) for a in addresses
    ]
    for i in range(0, len(uitds), 100):
        await asyncio.gather(*(u.connect() for u in uitds[i : i + 100]))
    # Warm-up, not timed: each UITD's first frame registers its link (a status message).
    for i in range(0, len(uitds), 100):
        await asyncio.gather(*(u.heartbeat() for u in uitds[i : i + 100]))
    alarm_uitds, others = uitds[: args.alarms], uitds[args.alarms :]
    # 1. Throughput: every other UITD sends back to back for --duration.
    counts = [0] * len(others)
    stop = asyncio.Event()
    started = time.monotonic()
    loader = asyncio.create_task(_load(others, stop, counts))
    await asyncio.sleep(args.duration)
    stop.set()
    await loader
    elapsed = time.monotonic() - started
    # 2. Latency: fire alarms 0.25 s apart among everyday heartbeats.
    stop = asyncio.Event()
    beats = asyncio.create_task(_heartbeats(others, args.heartbeat, stop))
    sent: dict[str, float] = {}
    confirms: list[float] = []
    alarms = []
    for i, uitd in enumerate(alarm_uitds):
        sent[f"fb-{i:05d}-heat"] = time.time()
        alarms.append(asyncio.create_task(_alarm(uitd, confirms)))
        await asyncio.sleep(0.25)
    await asyncio.gather(*alarms)
    await asyncio.sleep(2.0)  # the last alerts reach the stream
    stop.set()
    await beats
    for uitd in uitds:
        await uitd.close()
    latencies = []
    for detector, at in sent.items():
        seen = [t for t, p in streamed if p.get("subject") == f"device:{detector}"]
        if seen:
            latencies.append(min(seen) - at)
    return {
        "frames": sum(counts),
        "seconds": elapsed,
        "latencies": latencies,
        "confirms": confirms,
        "alarms": len(sent),
    }


def _cpu_s(child: Child) -> float:
    try:
        times = psutil.Process(child.proc.pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return float(times.user + times.system)


def _pct(values: Sequence[float]) -> str:
    if not values:
        return "-"
    p50, p99 = statistics.median(values), quantile(values, 0.99)
    return f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("SC_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--mqtt-url", default=os.environ.get("SC_MQTT_URL", "mqtt://127.0.0.1:1883")
    )
    parser.add_argument("--uitds", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--alarms", type=int, default=40, help="fire alarms for the latency")
    parser.add_argument(
        "--heartbeat", type=float, default=20.0, help="heartbeat interval during the alarms (s)"
    )
    args = parser.parse_args(argv)
    if args.alarms >= args.uitds:
        parser.error("--alarms must be below --uitds")
    with fresh_database(args.database_url, args.uitds) as (url, addresses):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
        env |= {
            "PYTHONUNBUFFERED": "1",
            "SC_DATABASE_URL": url,
            "SC_MQTT_URL": args.mqtt_url,
            "SC_GATEWAY__CLIENT_ID": f"sc-bench-fb-{secrets.token_hex(3)}",
            "SC_GATEWAY__TOPIC_FILTER": f"community/{COMMUNITY}/+/+/+",
            "SC_FIRE_BRIDGE__CLIENT_ID": f"sc-bench-fb-bridge-{secrets.token_hex(3)}",
        }
        with psycopg.connect(url) as conn:
            from store.accounts import create_token

            token = create_token(conn, "bench")
        api_port, bridge_port = free_port(), free_port()
        children = [
            Child("pipeline", ["run"], env, r"pipeline \S+ running"),
            Child("api", ["api", "--port", str(api_port)], env, "Uvicorn running|startup complete"),
            Child(
                "bridge",
                ["fire-bridge", "--host", "127.0.0.1", "--port", str(bridge_port)],
                env,
                "fire bridge listening",
            ),
        ]
        try:
            for child in children:
                child.wait_ready()
            streamed: list[tuple[float, dict[str, Any]]] = []
            ready = threading.Event()
            threading.Thread(
                target=_stream,
                args=(f"http://127.0.0.1:{api_port}", token, streamed, ready),
                daemon=True,
            ).start()
            if not ready.wait(10):
                raise BenchError("the live stream did not open")
            bench_cpu = time.process_time()
            result = asyncio.run(_run(bridge_port, addresses, args, streamed))
            cpu = {c.name: _cpu_s(c) for c in children}
            cpu["simulated UITDs"] = time.process_time() - bench_cpu
        finally:
            for child in reversed(children):
                child.stop()
    rate = result["frames"] / result["seconds"]
    load = os.getloadavg()[0]
    print(
        f"\nFire bridge, {args.uitds} simulated UITDs over TCP, send/confirm"
        f" (confirm after the pipeline's commit); load average {load:.1f} on"
        f" {os.cpu_count()} cores:"
    )
    frames, seconds = result["frames"], result["seconds"]
    print(f"  frames confirmed  {frames:,} in {seconds:.1f} s = {rate:,.0f} frames/s")
    print(
        f"  fire alarm frame -> alert on the live stream ({len(result['latencies'])}"
        f" of {result['alarms']} seen): {_pct(result['latencies'])}"
    )
    print(f"  fire alarm frame -> confirm: {_pct(result['confirms'])}")
    print("  CPU seconds used: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    return 0 if len(result["latencies"]) == result["alarms"] else 1


if __name__ == "__main__":
    sys.exit(main())
