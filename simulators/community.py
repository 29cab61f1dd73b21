"""A demo community's device roster: a realistic mix of all four classes with stable ids."""

from __future__ import annotations

import random

from core.models import Device
from simulators.access import ACCESS_INTERVAL_S, ACCESS_MODEL
from simulators.fire import FIRE_KINDS
from simulators.locker import LOCKER_INTERVAL_S, LOCKER_MODEL
from simulators.wearable import WEARABLE_INTERVAL_S, WEARABLE_MODEL

__all__ = ["CLASS_MIX", "ID_PREFIXES", "demo_devices"]

# Share of each class in a residential community: care watches for the
# elderly outnumber everything, then fire sensors, then doors and lockers.
CLASS_MIX: dict[str, float] = {"wearable": 0.40, "fire": 0.30, "access": 0.15, "locker": 0.15}
# The class part of a device id: ``{community}-wear-0001``.
ID_PREFIXES: dict[str, str] = {
    "wearable": "wear",
    "fire": "fire",
    "access": "door",
    "locker": "lock",
}
_NAMES = {
    "wearable": "Care watch",
    "access": "Door controller",
    "locker": "Parcel locker",
}


def _class_counts(count: int) -> dict[str, int]:
    """Split ``count`` by CLASS_MIX (largest remainder), every class present once there are 4."""
    shares = {cls: count * share for cls, share in CLASS_MIX.items()}
    counts = {cls: int(share) for cls, share in shares.items()}
    by_remainder = sorted(CLASS_MIX, key=lambda cls: shares[cls] - counts[cls], reverse=True)
    for cls in by_remainder[: count - sum(counts.values())]:
        counts[cls] += 1
    if count >= len(CLASS_MIX):
        for cls in CLASS_MIX:
            if counts[cls] == 0:
                donor = max(counts, key=lambda c: counts[c])
                counts[donor] -= 1
                counts[cls] = 1
    return counts


def demo_devices(*, community_id: str, count: int, seed: int) -> list[Device]:
    """``count`` devices for ``community_id``; ids depend only on the community and count,
    the seed picks the fire sensor kinds. Ordered by class, then number."""
    if count < 0:
        raise ValueError("count must not be negative")
    rng = random.Random(f"{seed}/{community_id}/roster")  # noqa: S311 - simulation, not secrets
    kinds = list(FIRE_KINDS.values())
    weights = [kind.weight for kind in kinds]
    devices: list[Device] = []
    for device_class, n in _class_counts(count).items():
        prefix = ID_PREFIXES[device_class]
        for index in range(1, n + 1):
            if device_class == "fire":
                kind = rng.choices(kinds, weights=weights)[0]
                model, interval = kind.model, kind.interval_s
                name = f"{kind.key.replace('_', ' ').capitalize()} sensor {index}"
            else:
                model, interval = {
                    "wearable": (WEARABLE_MODEL, WEARABLE_INTERVAL_S),
                    "access": (ACCESS_MODEL, ACCESS_INTERVAL_S),
                    "locker": (LOCKER_MODEL, LOCKER_INTERVAL_S),
                }[device_class]
                name = f"{_NAMES[device_class]} {index}"
            devices.append(
                Device(
                    id=f"{community_id}-{prefix}-{index:04d}",
                    community_id=community_id,
                    device_class=device_class,
                    model=model,
                    name=name,
                    expected_interval_s=interval,
                )
            )
    return devices
