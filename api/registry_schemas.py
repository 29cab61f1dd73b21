"""Public models of the registry API: devices with their health, credentials shown once,
import reports, fleet status, buildings, residents, users, tokens and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.schemas import Page, Public
from core.access import Role
from core.connectivity import Connectivity
from core.models import DeviceState
from core.registry import RegistryId

__all__ = [
    "AuditEntriesPublic",
    "AuditEntryPublic",
    "BuildingPublic",
    "BuildingsPublic",
    "CommunityStatusPublic",
    "DeviceHealthPublic",
    "DeviceImportError",
    "DeviceImportPublic",
    "DevicePublic",
    "DeviceRegistered",
    "DevicesPublic",
    "IssuedCredentials",
    "MqttCredentials",
    "ResidentPublic",
    "ResidentsPublic",
    "TokenCreate",
    "TokenCreated",
    "TokenPublic",
    "UnitPublic",
    "UserCreate",
    "UserPatch",
    "UserPublic",
    "UsersPublic",
]

_IN = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class DevicePublic(Public):
    id: str
    community_id: str
    device_class: str
    model: str
    name: str
    state: DeviceState
    expected_interval_s: int
    created_at: datetime
    last_seen: datetime | None = Field(description="Newest device time received")
    last_received_at: datetime | None = Field(description="When the platform last received data")
    online: bool | None = Field(description="Last status the device (or its Last Will) reported")
    status_at: datetime | None
    reporting: bool = Field(
        description="Data received within twice the expected interval (computed by the server)"
    )
    connectivity: Connectivity = Field(
        description="Status channel, Last Will and silence against the expected interval together"
    )
    battery: float | None = Field(description="Latest battery level reported, %")
    rssi: float | None = Field(description="Latest signal strength reported, dBm")
    building: str | None
    unit: str | None
    floor: int | None
    resident_id: str | None = Field(description="The resident a wearable belongs to")
    installed_at: datetime | None
    installed_by: str | None
    updated_at: datetime
    decommissioned_at: datetime | None
    has_credentials: bool = Field(description="MQTT credentials issued and not revoked")
    credentials_rotated_at: datetime | None


class DevicesPublic(Page):
    data: list[DevicePublic]


class MqttCredentials(Public):
    username: str
    password: str = Field(description="Shown once: only a hash is stored")
    client_id: str
    publish: str = Field(description="Topic filter the device may publish to")
    subscribe: str = Field(description="The device's command topic, the only one it may read")


class DeviceRegistered(DevicePublic):
    credentials: MqttCredentials


class IssuedCredentials(Public):
    device_id: str
    username: str
    password: str


class DeviceImportError(Public):
    line: int = Field(description="Line in the file; the header is line 1")
    device_id: str | None
    reason: str


class DeviceImportPublic(Public):
    imported: int
    invalid: int
    dry_run: bool
    buildings_created: int
    units_created: int
    errors: list[DeviceImportError]
    credentials: list[IssuedCredentials] = Field(description="Shown once: only hashes are stored")


class DeviceHealthPublic(Public):
    id: str
    device_class: str
    state: DeviceState
    connectivity: Connectivity
    battery: float | None
    rssi: float | None
    last_received_at: datetime | None
    building: str | None
    unit: str | None
    problems: list[str] = Field(description="offline, silent, never_seen, low_battery, weak_signal")


class CommunityStatusPublic(Public):
    community_id: str
    at: datetime
    devices: int = Field(description="Registered devices, decommissioned ones excluded")
    by_state: dict[str, int]
    by_connectivity: dict[str, int]
    low_battery: int
    weak_signal: int
    attention: list[DeviceHealthPublic] = Field(
        description="Active devices with a problem, worst first (at most the page size)"
    )


class UnitPublic(Public):
    id: str
    floor: int | None
    created_at: datetime


class BuildingPublic(Public):
    community_id: str
    id: str
    name: str
    address: str
    floors: int | None
    created_at: datetime
    units: list[UnitPublic]


class BuildingsPublic(Page):
    data: list[BuildingPublic]


class ResidentPublic(Public):
    id: str
    community_id: str
    name: str
    building: str | None
    unit: str | None
    address: str
    vulnerabilities: list[str]
    contacts: list[dict[str, Any]]
    devices: list[str] = Field(description="Wearables registered to the resident")
    created_at: datetime
    updated_at: datetime


class ResidentsPublic(Page):
    data: list[ResidentPublic]


# At most this many communities per user: a regional operator, not a whole country.
MAX_USER_COMMUNITIES = 500


class UserCreate(BaseModel):
    model_config = _IN

    name: RegistryId
    role: Role
    communities: Annotated[list[RegistryId], Field(max_length=MAX_USER_COMMUNITIES)] = Field(
        default_factory=list
    )
    all_communities: bool = Field(default=False, description="Every community, present and future")


class UserPatch(BaseModel):
    model_config = _IN

    role: Role | None = None
    communities: Annotated[list[RegistryId], Field(max_length=MAX_USER_COMMUNITIES)] | None = None
    all_communities: bool | None = None
    disabled: bool | None = Field(default=None, description="A disabled user's tokens stop working")


class UserPublic(Public):
    id: int
    name: str
    role: Role
    all_communities: bool
    communities: list[str]
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None


class UsersPublic(Page):
    data: list[UserPublic]


class TokenCreate(BaseModel):
    model_config = _IN

    name: Annotated[str, Field(min_length=1, max_length=200)]
    expires_at: AwareDatetime | None = Field(default=None, description="Default: never")


class TokenPublic(Public):
    id: int
    name: str
    user_id: int
    user_name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="Shown once: only its hash is stored")


class AuditEntryPublic(Public):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    community_id: str | None
    changed: list[str]
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditEntriesPublic(Page):
    data: list[AuditEntryPublic]
