"""Which model simulates which device: the factory from a registry ``Device`` to its model."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from core.models import Device
from simulators.access import AccessModel
from simulators.fire import FireModel
from simulators.locker import LockerModel
from simulators.model import COMMUNITY_TZ, DeviceModel
from simulators.wearable import WearableModel

__all__ = ["MODEL_TYPES", "build_model"]

MODEL_TYPES: dict[str, type[DeviceModel]] = {
    model_type.device_class: model_type
    for model_type in (FireModel, LockerModel, AccessModel, WearableModel)
}


def build_model(
    device: Device,
    *,
    seed: int,
    time_zone: ZoneInfo = COMMUNITY_TZ,
    incident_scale: float = 1.0,
) -> DeviceModel:
    """The simulated behaviour of ``device``; the same seed gives the same readings."""
    try:
        model_type = MODEL_TYPES[device.device_class]
    except KeyError:
        raise ValueError(f"no simulator for device class {device.device_class!r}") from None
    return model_type(
        device_id=device.id,
        seed=seed,
        expected_interval_s=device.expected_interval_s,
        model=device.model,
        time_zone=time_zone,
        incident_scale=incident_scale,
    )
