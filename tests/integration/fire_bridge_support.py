"""Helpers for the fire-bridge tests: UITD registration, the bridge in a thread or a process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from core.settings import FireBridgeSettings, Settings
from firebridge.registry import map_point, register_uitd
from firebridge.server import FireBridge
from firebridge.service import run_fire_bridge
from simulators.uitd import SMOKE_1, SMOKE_2
from store import schema

ROOT = Path(__file__).resolve().parents[2]


def address_for(name: str) -> bytes:
    """A UITD address of its own per test (the address is unique in the registry)."""
    return hashlib.sha256(name.encode()).digest()[:6]


def setup_uitd(
    url: str,
    community: str,
    uitd_id: str,
    *,
    building: str = "b1",
    heartbeat_s: int = 60,
    auto_provision: bool = False,
    detectors: bool = True,
) -> bytes:
    schema.upgrade(url)
    address = address_for(uitd_id)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO communities (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (community, community),
        )
        register_uitd(
            conn,
            device_id=uitd_id,
            community_id=community,
            address=address,
            building=building,
            heartbeat_s=heartbeat_s,
            auto_provision=auto_provision,
        )
        if detectors:
            for n, detector in enumerate((SMOKE_1, SMOKE_2), 1):
                map_point(
                    conn,
                    uitd_id=uitd_id,
                    device_id=f"{uitd_id}-smoke{n}",
                    system_type=detector.system_type,
                    system_address=detector.system_address,
                    zone=detector.zone,
                    position=detector.position,
                    component_type=detector.component_type,
                    description=detector.description,
                )
            map_point(
                conn, uitd_id=uitd_id, device_id=f"{uitd_id}-panel", system_type=1, system_address=1
            )
    return address


def setup_uitds(url: str, community: str, ids: list[str], *, heartbeat_s: int) -> list[bytes]:
    """Many UITDs without panel points, on one connection."""
    schema.upgrade(url)
    addresses = [address_for(u) for u in ids]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO communities (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (community, community),
        )
        for uitd_id, address in zip(ids, addresses, strict=True):
            register_uitd(
                conn,
                device_id=uitd_id,
                community_id=community,
                address=address,
                heartbeat_s=heartbeat_s,
            )
    return addresses


def bridge_settings(database_url: str, mqtt_url: str, client_id: str, **extra: object) -> Settings:
    return Settings(
        database_url=database_url,
        mqtt_url=mqtt_url,
        fire_bridge=FireBridgeSettings(host="127.0.0.1", port=0, client_id=client_id, **extra),
    )


@contextmanager
def bridge_thread(settings: Settings) -> Iterator[FireBridge]:
    """The bridge on an event loop of its own in this process; port chosen by the system."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def on_started(bridge: FireBridge) -> None:
        holder["bridge"] = bridge
        started.set()

    def target() -> None:
        asyncio.set_event_loop(loop)
        task = loop.create_task(run_fire_bridge(settings, on_started=on_started))
        holder["task"] = task
        try:
            loop.run_until_complete(task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            holder["error"] = exc
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="fire-bridge", daemon=True)
    thread.start()
    assert started.wait(30), "fire bridge did not start"
    if "error" in holder:
        raise AssertionError(f"fire bridge failed: {holder['error']!r}")
    bridge = holder["bridge"]
    assert isinstance(bridge, FireBridge)
    try:
        yield bridge
    finally:
        task = holder["task"]
        assert isinstance(task, asyncio.Task)
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
        assert not thread.is_alive(), "fire bridge did not stop"


def start_bridge_process(
    database_url: str, mqtt_url: str, client_id: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SC_")}
    env.update(
        SC_DATABASE_URL=database_url,
        SC_MQTT_URL=mqtt_url,
        SC_FIRE_BRIDGE__CLIENT_ID=client_id,
        SC_FIRE_BRIDGE__HOST="127.0.0.1",
        SC_FIRE_BRIDGE__PORT=str(port),
    )
    handle = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "firebridge"],
            env=env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    finally:
        handle.close()


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


def events(url: str, device: str, event: str) -> int:
    found = rows(
        url, "SELECT count(*) FROM device_events WHERE device_id = %s AND event = %s", device, event
    )
    return int(found[0][0])


async def until(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {limit_s:.0f}s waiting for {what}")


def alert(url: str, rule: str, subject: str) -> tuple[Any, ...] | None:
    found = rows(
        url,
        "SELECT severity, created_at, state FROM alerts WHERE rule_id = %s AND subject = %s"
        " ORDER BY id DESC LIMIT 1",
        rule,
        subject,
    )
    return found[0] if found else None
