"""A whole community from a seed: buildings, flats, residents, and the devices they live with.

Where devices go follows the codes and practice in domain.md: a smoke detector
in every stair-hall and in the homes of elders who live alone (GB 20517
independent alarms), a hydrant pressure gauge at the top of each building
(the most unfavourable point, GB 50974 5.2.2), a residual-current monitor on
each building's distribution board, extinguisher gauges every other floor, a
door controller at each building entrance and at the community gates, a
parcel locker bank per few buildings, and a care watch for each elder
enrolled in the care service. Device ids carry the place: ``B3-2F-smoke-01``
is the first smoke detector on the second floor of building 3, prefixed with
the community id in the registry.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from core.models import Device
from core.projection import project
from simulators.access import ACCESS_INTERVAL_S, ACCESS_MODEL
from simulators.fire import FIRE_KINDS
from simulators.locker import LOCKER_INTERVAL_S, LOCKER_MODEL
from simulators.wearable import WEARABLE_INTERVAL_S, WEARABLE_MODEL

__all__ = [
    "Building",
    "Community",
    "PlacedDevice",
    "Resident",
    "Unit",
    "generate_community",
]

Kind = Literal["urban", "rural"]
# Storeys: urban blocks in China are mostly 6-storey walk-ups to 18-storey towers;
# rural villages two- and three-storey houses grouped in rows.
FLOORS: dict[Kind, tuple[int, int]] = {"urban": (6, 18), "rural": (2, 3)}
UNITS_PER_FLOOR: dict[Kind, tuple[int, int]] = {"urban": (2, 4), "rural": (1, 2)}
OCCUPIED_SHARE = 0.9
# Household sizes 1-5 (China's average is about 2.6 people).
HOUSEHOLD_SIZES = (1, 2, 3, 4, 5)
HOUSEHOLD_WEIGHTS = (0.25, 0.30, 0.25, 0.15, 0.05)
# About one person in five is 60 or older (seventh census: 18.7 %, higher in old estates).
ELDERLY_SHARE = 0.22
# Elders enrolled in the community care service wear a watch; most of those
# who live alone are enrolled.
CARE_SHARE = 0.45
CARE_SHARE_ALONE = 0.85
# Gas detectors go in the kitchens of this share of flats.
GAS_DETECTOR_SHARE = 0.15
# One locker bank per this many buildings.
BUILDINGS_PER_LOCKER = 3
COMMUNITY_GATES = ("north-gate", "south-gate")
# Names for residents (pinyin); a seed gives the same people every time.
SURNAMES = (
    "Wang",
    "Li",
    "Zhang",
    "Liu",
    "Chen",
    "Yang",
    "Zhao",
    "Huang",
    "Zhou",
    "Wu",
    "Xu",
    "Sun",
)
GIVEN_NAMES = (
    "Wei",
    "Fang",
    "Min",
    "Jing",
    "Li",
    "Qiang",
    "Lei",
    "Jun",
    "Yan",
    "Hua",
    "Ping",
    "Gang",
    "Xiu Ying",
    "Gui Lan",
    "Shu Zhen",
    "Jian Guo",
)
REFERENCE_YEAR = 2026


@dataclass(frozen=True, slots=True, kw_only=True)
class Building:
    id: str  # "B3"
    name: str
    floors: int
    units_per_floor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Unit:
    id: str  # "B3-0502": building 3, floor 5, flat 2
    building: str
    floor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resident:
    id: str
    name: str
    unit: str
    birth_year: int
    lives_alone: bool
    # The care watch this resident wears (device id), if enrolled.
    wearable: str | None = None

    @property
    def elderly(self) -> bool:
        return REFERENCE_YEAR - self.birth_year >= 60


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedDevice:
    """A registry device and where it is: building, floor, flat, a readable spot."""

    device: Device
    local_id: str
    building: str | None
    floor: int | None
    unit: str | None
    location: str

    @property
    def id(self) -> str:
        return self.device.id


@dataclass(frozen=True, slots=True, kw_only=True)
class Community:
    id: str
    name: str
    kind: Kind
    time_zone: str
    seed: int
    buildings: tuple[Building, ...]
    units: tuple[Unit, ...]
    residents: tuple[Resident, ...]
    placed: tuple[PlacedDevice, ...]
    _by_local: dict[str, PlacedDevice] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_local.update({p.local_id: p for p in self.placed})

    @property
    def devices(self) -> list[Device]:
        return [p.device for p in self.placed]

    def has(self, local_id: str) -> bool:
        return local_id in self._by_local

    def device(self, local_id: str) -> PlacedDevice:
        """A device by its id inside the community (``B3-2F-smoke-01``)."""
        try:
            return self._by_local[local_id]
        except KeyError:
            raise KeyError(f"no device {local_id!r} in community {self.id}") from None


@dataclass(frozen=True, slots=True)
class _Spot:
    """Where a device goes: the place its id starts with, and its building, floor and
    flat (or room)."""

    place: str
    building: str | None
    floor: int | None = None
    unit: str | None = None


class _Placer:
    """Numbers devices per (place, kind) and builds their registry rows."""

    def __init__(self, community_id: str, rng: random.Random) -> None:
        self.community_id = community_id
        self.rng = rng
        self.placed: list[PlacedDevice] = []
        self._counts: dict[str, int] = {}

    def add(
        self, spot: _Spot, *, kind: str, device_class: str, model: str, interval_s: int, name: str
    ) -> str:
        stem = f"{spot.place}-{kind.replace('_', '-')}"
        number = self._counts[stem] = self._counts.get(stem, 0) + 1
        local_id = f"{stem}-{number:02d}"
        device = Device(
            id=f"{self.community_id}-{local_id}",
            community_id=self.community_id,
            device_class=device_class,
            model=model,
            name=name,
            expected_interval_s=interval_s,
        )
        # Building, floor and flat as the spot has them.
        placed = project(PlacedDevice, spot, device=device, local_id=local_id, location=name)
        self.placed.append(placed)
        return device.id

    def door(self, spot: _Spot, name: str) -> str:
        return self.add(
            spot,
            kind="door",
            device_class="access",
            model=ACCESS_MODEL,
            interval_s=ACCESS_INTERVAL_S,
            name=name,
        )

    def fire(self, key: str, spot: _Spot, where: str) -> str:
        kind = FIRE_KINDS[key]
        label = key.replace("_", " ")
        return self.add(
            spot,
            kind=key,
            device_class="fire",
            model=kind.model,
            interval_s=kind.interval_s,
            name=f"{label.capitalize()} sensor, {where}",
        )


def _buildings(rng: random.Random, count: int, kind: Kind) -> list[Building]:
    buildings = []
    for number in range(1, count + 1):
        buildings.append(
            Building(
                id=f"B{number}",
                name=f"Building {number}" if kind == "urban" else f"House row {number}",
                floors=rng.randint(*FLOORS[kind]),
                units_per_floor=rng.randint(*UNITS_PER_FLOOR[kind]),
            )
        )
    return buildings


def _units(building: Building) -> Iterator[Unit]:
    for floor in range(1, building.floors + 1):
        for flat in range(1, building.units_per_floor + 1):
            yield Unit(id=f"{building.id}-{floor:02d}{flat:02d}", building=building.id, floor=floor)


def _household(rng: random.Random, unit: Unit, first_id: int, community_id: str) -> list[Resident]:
    size = rng.choices(HOUSEHOLD_SIZES, weights=HOUSEHOLD_WEIGHTS)[0]
    surname = rng.choice(SURNAMES)
    residents = []
    for i in range(size):
        elderly = rng.random() < ELDERLY_SHARE * (1.6 if size <= 2 else 0.8)
        age = rng.randint(60, 95) if elderly else rng.randint(1 if i else 22, 59)
        residents.append(
            Resident(
                id=f"{community_id}-r{first_id + i:05d}",
                name=f"{surname} {rng.choice(GIVEN_NAMES)}",
                unit=unit.id,
                birth_year=REFERENCE_YEAR - age,
                lives_alone=size == 1,
            )
        )
    return residents


def generate_community(
    community_id: str,
    *,
    buildings: int,
    seed: int = 0,
    kind: Kind = "urban",
    name: str | None = None,
    time_zone: str = "Asia/Shanghai",
) -> Community:
    """``buildings`` buildings with their flats, residents and devices; same seed, same place."""
    if buildings < 1:
        raise ValueError("a community needs at least one building")
    # The seed alone draws the place: a scenario plays the same community under a new id.
    rng = random.Random(f"{seed}/community")  # noqa: S311 - simulation, not secrets
    placer = _Placer(community_id, rng)
    units: list[Unit] = []
    residents: list[Resident] = []
    built = _buildings(rng, buildings, kind)
    for building in built:
        b = building.id
        top = building.floors
        placer.door(_Spot(f"{b}-1F", b, 1, "entrance"), f"Entrance door, {building.name}")
        placer.fire("hydrant", _Spot(f"{b}-{top}F", b, top, "roof"), f"{building.name} roof")
        placer.fire(
            "residual_current",
            _Spot(f"{b}-1F", b, 1, "switch-room"),
            f"{building.name} board",
        )
        if kind == "urban":
            placer.fire(
                "heat",
                _Spot(f"{b}-basement", b, -1, "plant-room"),
                f"{building.name} plant room",
            )
        for floor in range(1, top + 1):
            # A smoke alarm in every hall, an extinguisher on every other floor.
            hall = _Spot(f"{b}-{floor}F", b, floor, f"{floor}F-hall")
            for key in ("smoke", "extinguisher") if floor % 2 == 1 else ("smoke",):
                placer.fire(key, hall, f"{building.name} {floor}F hall")
        for unit in _units(building):
            units.append(unit)
            flat = _Spot(unit.id, b, unit.floor, unit.id)
            if rng.random() < GAS_DETECTOR_SHARE:
                placer.fire("gas", flat, f"flat {unit.id} kitchen")
            if rng.random() >= OCCUPIED_SHARE:
                continue
            household = _household(rng, unit, len(residents) + 1, community_id)
            alone_elder = len(household) == 1 and household[0].elderly
            if alone_elder:
                placer.fire("smoke", flat, f"flat {unit.id}")
            for resident in household:
                share = CARE_SHARE_ALONE if resident.lives_alone else CARE_SHARE
                if resident.elderly and rng.random() < share:
                    watch = placer.add(
                        flat,
                        kind="watch",
                        device_class="wearable",
                        model=WEARABLE_MODEL,
                        interval_s=WEARABLE_INTERVAL_S,
                        name=f"Care watch of {resident.name}",
                    )
                    resident = replace(resident, wearable=watch)
                residents.append(resident)
    for index in range(0, len(built), BUILDINGS_PER_LOCKER):
        b = built[index].id
        placer.add(
            _Spot(f"{b}-1F", b, 1, "lobby"),
            kind="locker",
            device_class="locker",
            model=LOCKER_MODEL,
            interval_s=LOCKER_INTERVAL_S,
            name=f"Parcel locker, {built[index].name} lobby",
        )
    for gate in COMMUNITY_GATES if buildings > 1 else ():
        placer.door(_Spot(gate, None), f"Community {gate.replace('-', ' ')}")
    placer.fire("tank", _Spot("pump-room", None), "community pump room")
    return Community(
        id=community_id,
        name=name or f"Community {community_id}",
        kind=kind,
        time_zone=time_zone,
        seed=seed,
        buildings=tuple(built),
        units=tuple(units),
        residents=tuple(residents),
        placed=tuple(placer.placed),
    )
