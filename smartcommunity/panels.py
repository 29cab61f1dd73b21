"""Fire panels in scenarios: what joins the scenario player to the fire bridge.

The simulators do not import the bridge (tests/unit/test_architecture.py), so
the launcher registers a scenario's UITDs with the bridge's own registry
functions and starts a bridge for runs that were given none.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from core.settings import Settings
from firebridge.registry import map_point, register_uitd
from firebridge.service import bridge_in_thread
from simulators.registration import register_scenario
from simulators.scenario import BoundScenario
from simulators.uitd import SMOKE_1, SMOKE_2

__all__ = ["bridge_for_runs", "register_uitds", "register_with_panels"]


def register_with_panels(url: str, bound: BoundScenario) -> None:
    """The scenario's community and devices, then its UITDs and their points."""
    register_scenario(url, bound)
    register_uitds(url, bound)


def register_uitds(url: str, bound: BoundScenario) -> None:
    """Each UITD of the scenario in its building, with the points its simulator
    reports: the two smoke detectors and the panel (``<uitd>-smoke1``, ``-smoke2``,
    ``-panel``), as ``fire-bridge register`` and ``map`` would write them."""
    if not bound.uitds:
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for local, uitd in bound.uitds.items():
            register_uitd(
                conn,
                device_id=uitd.device_id,
                community_id=bound.community.id,
                address=uitd.address,
                building=uitd.building,
                name=f"UITD {local}",
                heartbeat_s=round(uitd.spec.heartbeat),
            )
            for point, detector in (("smoke1", SMOKE_1), ("smoke2", SMOKE_2)):
                map_point(
                    conn,
                    uitd_id=uitd.device_id,
                    device_id=uitd.point_id(point),
                    system_type=detector.system_type,
                    system_address=detector.system_address,
                    zone=detector.zone,
                    position=detector.position,
                    component_type=detector.component_type,
                    description=f"{local} {detector.description}",
                )
            map_point(
                conn,
                uitd_id=uitd.device_id,
                device_id=uitd.point_id("panel"),
                system_type=SMOKE_1.system_type,
                system_address=SMOKE_1.system_address,
            )


@contextmanager
def bridge_for_runs(settings: Settings, prefix: str) -> Iterator[tuple[str, int]]:
    """A fire bridge in this process for the runs' UITDs, on a free loopback port, with
    ``settings``' database and broker (the caller's: the runs' own)."""
    own = settings.fire_bridge.model_copy(
        update={
            "host": "127.0.0.1",
            "port": 0,
            "client_id": f"{prefix}-fire-bridge-{secrets.token_hex(3)}",
        }
    )
    with bridge_in_thread(settings.model_copy(update={"fire_bridge": own})) as bridge:
        assert bridge.port is not None
        yield ("127.0.0.1", bridge.port)
