"""Helpers for the fire-bridge tests: UITD registration, the bridge in a thread or a process."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psycopg

from core.settings import FireBridgeSettings, Settings
from firebridge.registry import map_point, register_uitd
from firebridge.service import bridge_in_thread
from simulators.uitd import SMOKE_1, SMOKE_2
from store import schema
from tests.integration.support import add_community, pipeline_thread, start_module

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
        add_community(conn, community)
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
                # A Detector's fields are what the point map keys a component by.
                point = dataclasses.asdict(detector)
                map_point(conn, uitd_id=uitd_id, device_id=f"{uitd_id}-smoke{n}", **point)
            map_point(
                conn, uitd_id=uitd_id, device_id=f"{uitd_id}-panel", system_type=1, system_address=1
            )
    return address


def setup_uitds(url: str, community: str, ids: list[str], *, heartbeat_s: int) -> list[bytes]:
    """Many UITDs without panel points, on one connection."""
    schema.upgrade(url)
    addresses = [address_for(u) for u in ids]
    with psycopg.connect(url, autocommit=True) as conn:
        add_community(conn, community)
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


def play(
    settings: Settings,
    scenario: Callable[[int], Coroutine[Any, Any, None]],
    *,
    pipeline: str,
    community: str,
) -> None:
    """``scenario(port)`` against a bridge in a thread, with the community's pipeline
    (client id ``pipeline``) committing what the bridge publishes."""
    assert settings.database_url is not None
    assert settings.mqtt_url is not None
    with (
        pipeline_thread(settings.database_url, settings.mqtt_url, pipeline, community),
        bridge_in_thread(settings) as bridge,
    ):
        assert bridge.port is not None
        asyncio.run(scenario(bridge.port))


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
    return start_module("firebridge", [], env, log)


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


async def until_alert(url: str, rule: str, subject: str, limit_s: float, what: str) -> None:
    """Wait until ``rule`` has an alert on ``subject``."""
    await until(lambda: alert(url, rule, subject) is not None, limit_s, what)


def alert(url: str, rule: str, subject: str) -> tuple[Any, ...] | None:
    found = rows(
        url,
        "SELECT severity, created_at, state FROM alerts WHERE rule_id = %s AND subject = %s"
        " ORDER BY id DESC LIMIT 1",
        rule,
        subject,
    )
    return found[0] if found else None
