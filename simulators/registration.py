"""Writing simulated devices into the registry, so that simulated devices are registered ones.

The registry's tables are ``communities`` and ``devices``, written through
``store.places`` and ``store.devices``; ``devices.building`` is filled, since the
rule engine correlates fire detectors by building. Existing rows are left as
they are: registering twice is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from datetime import time as clock
from zoneinfo import ZoneInfo

import psycopg

from core.models import Device
from simulators.scenario import BoundScenario
from store import devices as devices_store
from store import places, rosters
from store.devices import SimulatedDevice

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
    with psycopg.connect(url) as conn:
        return devices_store.issue_missing_credentials(conn, list(device_ids))


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
    with psycopg.connect(url) as conn:
        for community in sorted({d.community_id for d in devices}):
            places.ensure_community(
                conn, community, names.get(community, community), kind=kind, time_zone=time_zone
            )
        new = devices_store.register_simulated(
            conn, [SimulatedDevice.of(d, where.get(d.id)) for d in devices]
        )
    return Registered(devices=len(devices), new=new)


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
    now = datetime.now(ZoneInfo(bound.community.time_zone))
    off_day = (now.weekday() + 3) % 7
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for spec in bound.scenario.responders:
            responder = bound.responder_id(spec.id)
            team_id = f"{community}-{spec.team}-{spec.building or 'all'}"
            rosters.create_responder(
                conn,
                rosters.ResponderRecord(
                    id=responder,
                    community_id=community,
                    name=spec.id,
                    role=spec.role,
                    phone="",
                    mqtt_username=None,
                    user_id=None,
                ),
            )
            name = f"{spec.team} {spec.building or ''}".strip()
            team = rosters.create_team(
                conn, team_id, community, spec.building, name, spec.team, None, now
            ) or rosters.get_team(conn, team_id, now)
            assert team is not None  # created, or there already
            if spec.leader:
                rosters.set_team_leader(conn, team_id, responder)
                continue  # a leader is called after the roster, not on it
            if spec.on_duty:
                rosters.add_shifts(conn, team, responder, range(7), clock(0), clock(0))
            else:
                rosters.add_shifts(conn, team, responder, [off_day], clock(10), clock(11))


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
    community = bound.community.id
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            # A UITD's status is the bridge's to publish (on link loss), not its last words.
            if devices_store.count_online(conn, community, except_installed_by="fire-bridge") == 0:
                break
            time.sleep(RETIRE_POLL_S)
        for device_id in devices_store.device_ids(conn, community):
            devices_store.decommission(conn, device_id)
