"""The community generator: reproducible from a seed, sensible, and readable back from disk."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from core.metric_catalog import METRICS
from core.topics import Channel, device_topic, parse_topic
from simulators.devices import build_model
from simulators.model import COMMUNITY_TZ
from simulators.parallel import split
from simulators.population import FLOORS, generate_community
from simulators.roster import read_roster, write_roster


def test_same_seed_same_community_and_another_seed_differs() -> None:
    first = generate_community("north", buildings=3, seed=5)
    assert first == generate_community("north", buildings=3, seed=5)
    other = generate_community("north", buildings=3, seed=6)
    assert first.residents != other.residents
    assert [p.local_id for p in first.placed] != [p.local_id for p in other.placed]


@pytest.mark.parametrize("kind", ["urban", "rural"])
def test_every_class_placed_where_the_codes_want_it(kind: str) -> None:
    community = generate_community("c1", buildings=5, seed=1, kind=kind)  # type: ignore[arg-type]
    classes = Counter(d.device_class for d in community.devices)
    assert set(classes) == set(METRICS)
    ids = [d.id for d in community.devices]
    assert len(ids) == len(set(ids))
    for building in community.buildings:
        assert FLOORS[community.kind][0] <= building.floors <= FLOORS[community.kind][1]
        here = [p for p in community.placed if p.building == building.id]
        # A smoke detector in every stair-hall, one hydrant gauge at the top, one entrance.
        halls = {p.floor for p in here if "-smoke-" in p.local_id and p.unit == f"{p.floor}F-hall"}
        assert halls == set(range(1, building.floors + 1))
        (hydrant,) = [p for p in here if "-hydrant-" in p.local_id]
        assert hydrant.floor == building.floors
        assert sum(p.device.device_class == "access" for p in here) == 1
    for placed in community.placed:
        assert placed.device.id == f"c1-{placed.local_id}"
        # The installer's import wants a place (unit) for every floor given.
        assert (placed.floor is None) == (placed.unit is None), placed
        assert community.device(placed.local_id) is placed
        topic = device_topic("c1", placed.device.device_class, placed.device.id, Channel.TELEMETRY)
        assert parse_topic(topic).device_id == placed.device.id
    with pytest.raises(KeyError, match="no device"):
        community.device("B99-1F-smoke-01")


def test_residents_watches_and_units_hang_together() -> None:
    community = generate_community("c2", buildings=6, seed=3)
    units = {u.id for u in community.units}
    watches = {d.id for d in community.devices if d.device_class == "wearable"}
    assert community.residents
    elderly = [r for r in community.residents if r.elderly]
    assert 0.1 < len(elderly) / len(community.residents) < 0.4
    worn = set()
    for resident in community.residents:
        assert resident.unit in units
        if resident.wearable is not None:
            assert resident.elderly
            worn.add(resident.wearable)
    assert worn == watches
    alone = [r for r in elderly if r.lives_alone]
    assert alone
    # An elder living alone has an independent smoke alarm at home.
    flats_with_alarm = {
        p.unit for p in community.placed if "-smoke-" in p.local_id and p.unit in units
    }
    assert {r.unit for r in alone} == flats_with_alarm


def test_generated_devices_simulate_inside_the_catalogue() -> None:
    community = generate_community("c3", buildings=2, seed=2)
    start = datetime(2026, 11, 29, tzinfo=COMMUNITY_TZ)
    for device in community.devices:
        model = build_model(device, seed=1)
        for step in range(0, 24 * 3600, device.expected_interval_s * 6):
            for name, value in model.sample(start + timedelta(seconds=step)).metrics.items():
                spec = METRICS[device.device_class][name]
                assert spec.low <= value <= spec.high


def test_roster_files_round_trip(tmp_path: Path) -> None:
    community = generate_community("c4", buildings=2, seed=9)
    devices_csv, community_json = write_roster(community, tmp_path / "out")
    expected = [(p.device, p.building) for p in community.placed]
    assert read_roster(devices_csv) == expected
    assert read_roster(community_json) == expected
    picture = json.loads(community_json.read_text(encoding="utf-8"))
    assert picture["community"]["id"] == "c4"
    assert len(picture["residents"]) == len(community.residents)
    assert len(picture["buildings"]) == 2
    header = devices_csv.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("id,community_id,device_class,model,name,expected_interval_s")
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nx\n")
    with pytest.raises(ValueError, match="columns"):
        read_roster(bad)


def test_generator_refuses_an_empty_community() -> None:
    with pytest.raises(ValueError, match="at least one building"):
        generate_community("c5", buildings=0)


@pytest.mark.parametrize(("total", "parts"), [(10, 3), (2, 4), (0, 2), (100_000, 7)])
def test_split_shares_a_count_exactly(total: int, parts: int) -> None:
    shares = [split(total, parts, i) for i in range(parts)]
    assert sum(s for s in shares if s is not None) == total
    assert max(s or 0 for s in shares) - min(s or 0 for s in shares) <= 1
    assert split(None, parts, 0) is None
