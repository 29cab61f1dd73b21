"""What the registry accepts: devices with their place, buildings, units and residents.

One set of validated models for every way in (the API, the CLI, a CSV import), so
that a row refused by one is refused by all with the same reason. What needs the
database (does the community exist, is the id taken) is checked where the
database is, in ``store/devices.py`` and ``store/places.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from core.metric_catalog import DEVICE_CLASSES
from core.topics import valid_id

__all__ = [
    "MAX_INTERVAL_S",
    "VULNERABILITIES",
    "BuildingSpec",
    "Contact",
    "DeviceClassName",
    "DevicePatch",
    "DeviceSpec",
    "RegistryId",
    "ResidentPatch",
    "ResidentSpec",
    "UnitSpec",
    "changed_fields",
]

_IN = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)
# A device silent for a week is not "expected" to report; the same bound as core.models.Device.
MAX_INTERVAL_S = 7 * 24 * 3600
# What a responder must know before entering a flat; free text would invite diagnoses.
VULNERABILITIES = frozenset(
    {
        "lives_alone",
        "limited_mobility",
        "wheelchair",
        "hearing_impaired",
        "visually_impaired",
        "cognitive_impairment",
        "oxygen_at_home",
        "fall_risk",
    }
)


def _id(value: str) -> str:
    if not valid_id(value):
        raise ValueError("use 1-64 letters, digits, '_', '.', ':' or '-', starting alphanumeric")
    return value


def _device_class(value: str) -> str:
    if value not in DEVICE_CLASSES:
        raise ValueError(
            f"unknown device class {value!r}: expected one of {', '.join(sorted(DEVICE_CLASSES))}"
        )
    return value


def _device_id(value: str) -> str:
    # The id is also the device's MQTT user name: Mosquitto's password_file splits at ':'.
    if not valid_id(value) or ":" in value:
        raise ValueError(
            "use 1-64 letters, digits, '_', '.' or '-', starting alphanumeric"
            " (the id is also the device's MQTT user name)"
        )
    return value


def _vulnerabilities(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - VULNERABILITIES)
    if unknown:
        known = ", ".join(sorted(VULNERABILITIES))
        raise ValueError(f"unknown vulnerability {', '.join(unknown)}: one of {known}")
    return sorted(set(values))


RegistryId = Annotated[str, AfterValidator(_id)]
DeviceClassName = Annotated[str, AfterValidator(_device_class)]
Text = Annotated[str, Field(max_length=200)]
Interval = Annotated[int, Field(ge=1, le=MAX_INTERVAL_S)]
Floor = Annotated[int, Field(ge=-10, le=300)]


class _Placed(BaseModel):
    """Building and unit: a unit names a flat or room inside a building."""

    model_config = _IN

    building: RegistryId | None = None
    unit: RegistryId | None = None
    floor: Floor | None = None

    @model_validator(mode="after")
    def _unit_needs_building(self) -> _Placed:
        if self.unit is not None and self.building is None:
            raise ValueError("a unit needs its building")
        if self.floor is not None and self.unit is None:
            raise ValueError("a floor belongs to a unit: give the unit too")
        return self


class DeviceSpec(_Placed):
    """One device to register."""

    id: Annotated[str, AfterValidator(_device_id)]
    community_id: RegistryId
    device_class: DeviceClassName
    model: Text = ""
    name: Text = ""
    expected_interval_s: Interval = 300
    resident_id: RegistryId | None = Field(
        default=None, description="The resident a wearable belongs to"
    )
    installed_at: AwareDatetime | None = Field(
        default=None, description="When it was installed (default: now)"
    )

    @model_validator(mode="after")
    def _resident_wears_it(self) -> DeviceSpec:
        if self.resident_id is not None and self.device_class != "wearable":
            raise ValueError("only a wearable belongs to a resident")
        return self


class DevicePatch(BaseModel):
    """Fields an installer may change. Community and class are fixed: they are in the
    device's topics and its broker ACL; decommission and register anew instead."""

    model_config = _IN

    model: Text | None = None
    name: Text | None = None
    expected_interval_s: Interval | None = None
    building: RegistryId | None = None
    unit: RegistryId | None = None
    floor: Floor | None = None
    resident_id: RegistryId | None = None
    installed_at: AwareDatetime | None = None


class BuildingSpec(BaseModel):
    model_config = _IN

    id: RegistryId
    name: Text = ""
    address: Text = ""
    floors: Annotated[int, Field(ge=1, le=300)] | None = None


class UnitSpec(BaseModel):
    model_config = _IN

    id: RegistryId
    floor: Floor | None = None


class Contact(BaseModel):
    model_config = _IN

    name: Annotated[str, Field(min_length=1, max_length=100)]
    phone: Annotated[str, Field(pattern=r"^\+?[0-9 ()-]{3,30}$")]
    relation: Annotated[str, Field(max_length=50)] = ""


Vulnerabilities = Annotated[list[str], Field(max_length=16), AfterValidator(_vulnerabilities)]
Contacts = Annotated[list[Contact], Field(max_length=5)]


class ResidentSpec(_Placed):
    """A person in elderly care: as little as a responder needs, nothing more."""

    id: RegistryId
    community_id: RegistryId
    name: Annotated[str, Field(min_length=1, max_length=100)]
    address: Text = ""
    vulnerabilities: Vulnerabilities = Field(default_factory=list)
    contacts: Contacts = Field(default_factory=list)


class ResidentPatch(BaseModel):
    model_config = _IN

    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    address: Text | None = None
    building: RegistryId | None = None
    unit: RegistryId | None = None
    vulnerabilities: Vulnerabilities | None = None
    contacts: Contacts | None = None


def changed_fields(patch: BaseModel) -> dict[str, Any]:
    """The fields a PATCH body actually set (an explicit null clears a field)."""
    return {name: getattr(patch, name) for name in patch.model_fields_set}
