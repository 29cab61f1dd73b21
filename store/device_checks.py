"""What only the database can tell about devices to be registered or changed: an
unknown community, building, unit or resident, an id taken, a floor that does not
match its unit. Reads only (``store.devices`` registers and changes devices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.registry import DeviceSpec
from store.rows import Conn

__all__ = ["Problem", "check_specs"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a device cannot be registered as asked: which field, what is wrong, a kind."""

    field: str
    message: str
    kind: str


def _existing(conn: Conn, query: str, values: list[Any]) -> set[Any]:
    if not values:
        return set()
    return {tuple(r) if len(r) > 1 else r[0] for r in conn.execute(query.encode(), (values,))}


def check_specs(
    conn: Conn,
    specs: Sequence[DeviceSpec],
    *,
    visible: Callable[[str], bool],
    create_locations: bool,
    new_ids: bool = True,
) -> dict[int, Problem]:
    """What is wrong with each spec (by index) that only the database can tell.

    A community the caller may not see is reported exactly as one that does not exist.
    ``new_ids=False`` checks a change to registered devices: their ids are theirs.
    """
    ids = [s.id for s in specs] if new_ids else []
    communities = _existing(
        conn,
        "SELECT id FROM communities WHERE id = ANY(%s)",
        sorted({s.community_id for s in specs}),
    )
    taken = _existing(conn, "SELECT id FROM devices WHERE id = ANY(%s)", ids)
    accounts = _existing(conn, "SELECT username FROM mqtt_accounts WHERE username = ANY(%s)", ids)
    places = [s for s in specs if s.building is not None]
    buildings = _existing(
        conn,
        "SELECT community_id, id FROM buildings WHERE community_id || '/' || id = ANY(%s)",
        sorted({f"{s.community_id}/{s.building}" for s in places}),
    )
    unit_floors: dict[tuple[str, str, str], int | None] = {}
    keys = sorted({f"{s.community_id}/{s.building}/{s.unit}" for s in places if s.unit})
    if keys:
        for c, b, u, floor in conn.execute(
            "SELECT community_id, building_id, id, floor FROM units"
            " WHERE community_id || '/' || building_id || '/' || id = ANY(%s)",
            (keys,),
        ):
            unit_floors[(c, b, u)] = floor
    residents = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT id, community_id FROM residents WHERE id = ANY(%s)",
            (sorted({s.resident_id for s in specs if s.resident_id}),),
        )
    }
    problems: dict[int, Problem] = {}
    for index, spec in enumerate(specs):
        problem: Problem | None = None
        if spec.community_id not in communities or not visible(spec.community_id):
            problem = Problem(
                "community_id", f"unknown community {spec.community_id!r}", "unknown_community"
            )
        elif spec.id in taken:
            problem = Problem("id", f"device {spec.id!r} already exists", "device_exists")
        elif spec.id in accounts:
            problem = Problem(
                "id", f"{spec.id!r} is a broker service account's user name", "device_exists"
            )
        elif (
            spec.building is not None
            and not create_locations
            and (spec.community_id, spec.building) not in buildings
        ):
            problem = Problem("building", f"unknown building {spec.building!r}", "unknown_building")
        elif spec.unit is not None and spec.building is not None:
            key = (spec.community_id, spec.building, spec.unit)
            if key not in unit_floors and not create_locations:
                problem = Problem("unit", f"unknown unit {spec.unit!r}", "unknown_unit")
            elif (
                key in unit_floors
                and spec.floor is not None
                and unit_floors[key] not in (None, spec.floor)
            ):
                problem = Problem(
                    "floor",
                    f"unit {spec.unit!r} is on floor {unit_floors[key]}, not {spec.floor}",
                    "floor_mismatch",
                )
        if (
            problem is None
            and spec.resident_id is not None
            and residents.get(spec.resident_id) != spec.community_id
        ):
            problem = Problem(
                "resident_id", f"unknown resident {spec.resident_id!r}", "unknown_resident"
            )
        if problem is not None:
            problems[index] = problem
    return problems
