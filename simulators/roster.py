"""A generated community on disk: a device CSV for the installer import, and the whole picture.

``devices.csv`` has the registry's columns first (``id, community_id,
device_class, model, name, expected_interval_s``, what ``POST /api/v1/devices``
takes) and the place after them (``building, floor, unit``).
``community.json`` holds the community, its buildings, flats, residents and
devices. Either file can be read back as the devices to simulate.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.device_csv import COLUMNS
from core.models import Device
from simulators.population import Community

__all__ = ["DEVICE_COLUMNS", "RosterEntry", "read_roster", "write_roster"]

# The installer import's columns (core.device_csv) up to the place: a generated
# community has no residents enrolled on devices nor installation dates.
DEVICE_COLUMNS = COLUMNS[: COLUMNS.index("unit") + 1]
RosterEntry = tuple[Device, str | None]


def write_roster(community: Community, directory: Path) -> tuple[Path, Path]:
    """Write ``devices.csv`` and ``community.json`` into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    devices_csv = directory / "devices.csv"
    with devices_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(DEVICE_COLUMNS)
        for placed in community.placed:
            d = placed.device
            writer.writerow(
                (
                    d.id,
                    d.community_id,
                    d.device_class,
                    d.model,
                    d.name,
                    d.expected_interval_s,
                    placed.building or "",
                    "" if placed.floor is None else placed.floor,
                    placed.unit or "",
                )
            )
    picture: dict[str, Any] = {
        "community": {
            "id": community.id,
            "name": community.name,
            "kind": community.kind,
            "time_zone": community.time_zone,
            "seed": community.seed,
        },
        "buildings": [asdict(b) for b in community.buildings],
        "units": [asdict(u) for u in community.units],
        "residents": [{**asdict(r), "elderly": r.elderly} for r in community.residents],
        "devices": [
            {
                **placed.device.model_dump(mode="json", exclude={"state"}),
                "local_id": placed.local_id,
                "building": placed.building,
                "floor": placed.floor,
                "unit": placed.unit,
            }
            for placed in community.placed
        ],
    }
    community_json = directory / "community.json"
    community_json.write_text(json.dumps(picture, indent=1, ensure_ascii=False), encoding="utf-8")
    return devices_csv, community_json


def _entry(row: dict[str, Any]) -> RosterEntry:
    fields = {key: row[key] for key in DEVICE_COLUMNS[:6] if row.get(key) not in (None, "")}
    building = row.get("building") or None
    return Device.model_validate(fields), None if building is None else str(building)


def read_roster(path: Path) -> list[RosterEntry]:
    """Devices (and their buildings) from a ``devices.csv`` or a ``community.json``."""
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = data["devices"] if isinstance(data, dict) else data
        return [_entry(row) for row in rows]
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "id" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: needs at least the columns {', '.join(DEVICE_COLUMNS[:3])}")
        return [_entry(row) for row in reader]
