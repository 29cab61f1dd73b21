"""Writing simulated devices into the registry, so that simulated devices are registered ones.

The registry's tables are ``communities`` and ``devices`` (core/migrations);
``devices.building`` arrives with the alerts migration and is filled when it is
there, since the rule engine correlates fire detectors by building. Existing
rows are left as they are: registering twice is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import psycopg

from core.models import Device
from core.passwords import hash_password, new_secret
from simulators.scenario import BoundScenario

__all__ = [
    "Registered",
    "issue_credentials",
    "register_devices",
    "register_responders",
    "register_scenario",
    "retire_scenario",
]


# How long retiring waits for the pipeline to store the cast's offline statuses.
RETIRE_SETTLE_S = 15.0
RETIRE_POLL_S = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class Registered:
    devices: int
    new: int


def issue_credentials(url: str, device_ids: Iterable[str]) -> dict[str, str]:
    """MQTT passwords for the devices that have none yet, as the registry issues them
    (only the hash is stored); returns device id -> password, the only plaintext copy."""
    issued: dict[str, str] = {}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT id FROM devices WHERE id = ANY(%s) AND mqtt_password_hash IS NULL"
            " AND state <> 'decommissioned' ORDER BY id FOR UPDATE",
            (list(device_ids),),
        )
        for (device_id,) in cur.fetchall():
            issued[str(device_id)] = new_secret()
        cur.executemany(
            "UPDATE devices SET mqtt_password_hash = %s, credentials_rotated_at = now(),"
            " updated_at = now() WHERE id = %s",
            [(hash_password(password), device_id) for device_id, password in issued.items()],
        )
    return issued


def _has_building_column(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'devices'"
        " AND column_name = 'building'"
    ).fetchone()
    return row is not None


def register_devices(
    url: str,
    devices: Iterable[Device],
    *,
    buildings: Mapping[str, str | None] | None = None,
    community_names: Mapping[str, str] | None = None,
    time_zone: str = "Asia/Shanghai",
    kind: str = "urban",
) -> Registered:
    """Insert the devices' communities and the devices; ``buildings`` maps device id to building."""
    devices = list(devices)
    where = buildings or {}
    names = community_names or {}
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        communities = sorted({d.community_id for d in devices})
        cur.executemany(
            "INSERT INTO communities (id, name, kind, time_zone) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            [(c, names.get(c, c), kind, time_zone) for c in communities],
        )
        rows = [
            (
                d.id,
                d.community_id,
                d.device_class,
                d.model,
                d.name,
                d.state.value,
                d.expected_interval_s,
            )
            for d in devices
        ]
        if _has_building_column(conn):
            cur.executemany(
                "INSERT INTO devices (id, community_id, device_class, model, name, state,"
                " expected_interval_s, building) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                [(*row, where.get(row[0])) for row in rows],
            )
        else:
            cur.executemany(
                "INSERT INTO devices (id, community_id, device_class, model, name, state,"
                " expected_interval_s) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                rows,
            )
        cur.execute(
            "SELECT count(*) FROM devices"
            " WHERE id = ANY(%s) AND created_at >= transaction_timestamp()",
            ([d.id for d in devices],),
        )
        found = cur.fetchone()
    return Registered(devices=len(devices), new=int(found[0]) if found else 0)


def register_scenario(url: str, bound: BoundScenario) -> Registered:
    """The scenario's whole community, the cast with the intervals it reports at, and
    its Alink devices. Its UITDs are the fire bridge's to register
    (smartcommunity/panels.py: ``register_with_panels``)."""
    placed = [*bound.community.placed, *(p for p in bound.cast if p.device.id in bound.products)]
    devices = [
        p.device.model_copy(update={"expected_interval_s": bound.intervals[p.device.id]})
        if p.device.id in bound.intervals
        else p.device
        for p in placed
    ]
    community = bound.community
    registered = register_devices(
        url,
        devices,
        buildings={p.device.id: p.building for p in placed},
        community_names={community.id: f"Scenario {bound.scenario.name}"},
        time_zone=community.time_zone,
        kind=community.kind,
    )
    register_responders(url, bound)
    return registered


def register_responders(url: str, bound: BoundScenario) -> None:
    """The scenario's responders, one team per (kind, building), on the roster: around
    the clock when on duty, else one hour three days away (next on the ladder only)."""
    if not bound.scenario.responders:
        return
    community = bound.community.id
    off_day = (datetime.now(ZoneInfo(bound.community.time_zone)).weekday() + 3) % 7
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for spec in bound.scenario.responders:
            responder = bound.responder_id(spec.id)
            team = f"{community}-{spec.team}-{spec.building or 'all'}"
            conn.execute(
                "INSERT INTO responders (id, community_id, name, role) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (responder, community, spec.id, spec.role),
            )
            conn.execute(
                "INSERT INTO teams (id, community_id, building_id, name, kind)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (
                    team,
                    community,
                    spec.building,
                    f"{spec.team} {spec.building or ''}".strip(),
                    spec.team,
                ),
            )
            if spec.leader:
                conn.execute("UPDATE teams SET leader_id = %s WHERE id = %s", (responder, team))
                continue  # a leader is called after the roster, not on it
            days = (
                [(d, "00:00", "00:00") for d in range(7)]
                if spec.on_duty
                else [(off_day, "10:00", "11:00")]
            )
            for weekday, starts, ends in days:
                conn.execute(
                    "INSERT INTO shifts (community_id, team_id, responder_id, weekday, starts,"
                    " ends) VALUES (%s, %s, %s, %s, %s, %s)",
                    (community, team, responder, weekday, starts, ends),
                )


def retire_scenario(url: str, bound: BoundScenario, *, settle_s: float = RETIRE_SETTLE_S) -> None:
    """Decommission a finished run's devices: silent from now on, they must not page anyone.

    First wait (at most ``settle_s``) until the pipeline has stored the cast's
    last words: every device that said online has said offline (its clean-stop
    status or its Last Will). Retired before that, those would be dead letters
    ``device_decommissioned`` on every run. Without a pipeline running, the wait
    simply ends at the bound.

    One row per statement, each committed at once: the ingest writer is
    updating these rows too (the cast's last words and offline statuses), and a
    statement that locks several of them in its own order can deadlock with it.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            # A UITD's status is the bridge's to publish (on link loss), not its last words.
            row = conn.execute(
                "SELECT count(*) FROM devices WHERE community_id = %s"
                " AND state <> 'decommissioned' AND online IS TRUE"
                " AND installed_by IS DISTINCT FROM 'fire-bridge'",
                (bound.community.id,),
            ).fetchone()
            if row is None or row[0] == 0:
                break
            time.sleep(RETIRE_POLL_S)
        ids = conn.execute(
            "SELECT id FROM devices WHERE community_id = %s ORDER BY id", (bound.community.id,)
        ).fetchall()
        for (device_id,) in ids:
            conn.execute(
                "UPDATE devices SET state = 'decommissioned', decommissioned_at = now(),"
                " mqtt_password_hash = NULL, updated_at = now()"
                " WHERE id = %s AND state <> 'decommissioned'",
                (device_id,),
            )
