"""``/api/v1/devices``: register (one, or a CSV of hundreds), list/filter, show, change,
maintenance, decommission, and MQTT credentials.

Who may do this, and which devices they see, is decided once for all routes by
``api.scope.authorize``; the handlers here only filter lists by it.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Body, HTTPException, Query, status
from fastapi.responses import JSONResponse

from api.answers import found_or_404
from api.cursors import LimitQuery, id_page
from api.deps import ClockDep, ConnDep, SettingsDep, page_size
from api.registry_schemas import (
    DeviceImportError,
    DeviceImportPublic,
    DevicePublic,
    DeviceRegistered,
    DevicesPublic,
    IssuedCredentials,
    MqttCredentials,
)
from api.schemas import DeviceClass
from api.scope import (
    COMMUNITY_HINT,
    Authorized,
    DeviceId,
    ValidationProblem,
    unknown_in_body,
)
from core.broker_acl import command_topic
from core.connectivity import INACTIVITY_FACTOR, judge
from core.device_csv import MAX_CSV_BYTES, CsvFileError, RowError, parse_devices_csv
from core.fleet import presence_of
from core.models import DeviceState
from core.registry import DevicePatch, DeviceSpec, changed_fields
from core.topics import device_filter
from store import device_checks, devices

__all__ = ["device_public", "get_device_or_404", "router"]

router = APIRouter(prefix="/devices", tags=["devices"])


def device_public(record: devices.DeviceRecord, now: datetime) -> DevicePublic:
    grace = timedelta(seconds=INACTIVITY_FACTOR * record.expected_interval_s)
    reporting = record.last_received_at is not None and record.last_received_at > now - grace
    connectivity = judge(presence_of(record), now)
    return DevicePublic.model_validate(
        {**asdict(record), "reporting": reporting, "connectivity": connectivity}
    )


def get_device_or_404(
    conn: psycopg.Connection[Any], device_id: str, now: datetime | None = None
) -> DevicePublic:
    found = found_or_404(devices.get_device(conn, device_id), f"no device {device_id!r}")
    return device_public(found, now or datetime.now(UTC))


def _problem(problem: device_checks.Problem, value: str) -> HTTPException:
    if problem.kind == "device_exists":
        return HTTPException(status.HTTP_409_CONFLICT, detail=problem.message)
    if problem.kind == "unknown_community":
        return unknown_in_body("community_id", value, COMMUNITY_HINT)
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": ["body", problem.field], "msg": problem.message, "type": problem.kind}],
    )


def _credentials(record: devices.DeviceRecord, password: str) -> MqttCredentials:
    return MqttCredentials(
        username=record.id,
        password=password,
        client_id=record.id,
        publish=device_filter(record.community_id, record.device_class, record.id),
        subscribe=command_topic(record.community_id, record.device_class, record.id),
    )


def _registered(record: devices.DeviceRecord, password: str, now: datetime) -> DeviceRegistered:
    return DeviceRegistered(
        **device_public(record, now).model_dump(), credentials=_credentials(record, password)
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def register(
    conn: ConnDep, principal: Authorized, clock: ClockDep, body: DeviceSpec
) -> DeviceRegistered:
    """Register one device in an existing community, with its MQTT credentials.

    The password is in this response only; the registry keeps a hash. 409 if the id is
    taken. A building or unit must exist (``/communities/{id}/buildings``)."""
    outcome = devices.register_device(
        conn, body, visible=principal.sees, installed_by=principal.actor
    )
    if isinstance(outcome, device_checks.Problem):
        raise _problem(outcome, body.community_id)
    record, password = outcome
    return _registered(record, password, clock())


def _import_public(report: devices.ImportReport, imported: int) -> DeviceImportPublic:
    return DeviceImportPublic(
        imported=imported,
        invalid=len(report.errors),
        dry_run=report.dry_run,
        buildings_created=report.buildings_created,
        units_created=report.units_created,
        errors=[
            DeviceImportError(line=e.line, device_id=e.device_id, reason=e.reason)
            for e in report.errors
        ],
        credentials=[
            IssuedCredentials(device_id=i.device_id, username=i.device_id, password=i.password)
            for i in report.issued
        ],
    )


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    max_body_size=MAX_CSV_BYTES + 1,
    responses={
        200: {"model": DeviceImportPublic, "description": "dry run: what would be imported"},
        413: {"description": f"larger than {MAX_CSV_BYTES} bytes"},
        422: {
            "model": DeviceImportPublic | ValidationProblem,
            "description": "bad rows, nothing imported; or bad query parameters",
        },
    },
)
def import_csv(
    conn: ConnDep,
    principal: Authorized,
    # Optional so that an empty body is answered like an empty file (a DeviceImportPublic
    # 422 naming line 1), as documented, not with a validation error of another shape.
    csv_file: Annotated[
        bytes, Body(media_type="text/csv", description="UTF-8 CSV with a header row")
    ] = b"",
    skip_invalid: Annotated[
        bool, Query(description="Import the good rows even when some are bad")
    ] = False,
    dry_run: Annotated[bool, Query(description="Validate only")] = False,
    create_locations: Annotated[
        bool, Query(description="Create the buildings and units the rows name")
    ] = True,
) -> Any:
    """Register many devices from a CSV (see docs/installer.md for the columns).

    Every row is validated first; each bad one is reported with its line and reason,
    and then nothing is imported, unless ``skip_invalid``. The credentials of the
    devices imported are in this response only."""
    if len(csv_file) > MAX_CSV_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, detail=f"a CSV may have {MAX_CSV_BYTES} bytes"
        )
    try:
        parsed = parse_devices_csv(csv_file.decode("utf-8"))
    except UnicodeDecodeError as exc:
        report = devices.ImportReport(errors=[_file_error(1, f"not UTF-8 (byte {exc.start})")])
        return _refused(report)
    except CsvFileError as exc:
        return _refused(devices.ImportReport(errors=[_file_error(exc.line, exc.reason)]))
    report = devices.import_devices(
        conn,
        parsed,
        visible=principal.sees,
        installed_by=principal.actor,
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        create_locations=create_locations,
    )
    if dry_run:
        would = len(parsed.rows) - (len(report.errors) - len(parsed.errors))
        return JSONResponse(_import_public(report, would).model_dump(mode="json"), status_code=200)
    if report.errors and not skip_invalid:
        return _refused(report)
    return _import_public(report, len(report.issued))


def _file_error(line: int, reason: str) -> RowError:
    return RowError(line, None, reason)


def _refused(report: devices.ImportReport) -> JSONResponse:
    public = _import_public(report, 0)
    return JSONResponse(public.model_dump(mode="json"), status_code=422)


@router.get("")
def list_devices(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    clock: ClockDep,
    community_id: Annotated[str | None, Query(max_length=64)] = None,
    device_class: Annotated[DeviceClass | None, Query()] = None,
    state: DeviceState | None = None,
    building: Annotated[str | None, Query(max_length=64)] = None,
    resident_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: LimitQuery = None,
    after: Annotated[
        str | None, Query(description="next_cursor of the previous page", max_length=64)
    ] = None,
) -> DevicesPublic:
    """Devices of your communities ordered by id, optionally filtered."""
    size = page_size(settings, limit)
    rows = devices.list_devices(
        conn,
        within=principal.communities,
        community_id=community_id,
        device_class=device_class,
        state=state.value if state else None,
        building=building,
        resident_id=resident_id,
        after=after,
        limit=size + 1,
    )
    now = clock()
    data, cursor = id_page(rows, size, lambda r: device_public(r, now))
    return DevicesPublic(data=data, next_cursor=cursor)


@router.get("/{device_id}")
def show_device(
    conn: ConnDep, clock: ClockDep, _p: Authorized, device_id: DeviceId
) -> DevicePublic:
    """One device: where it is, its state, connectivity, battery and signal."""
    return get_device_or_404(conn, device_id, clock())


@router.patch("/{device_id}")
def change_device(
    conn: ConnDep, principal: Authorized, clock: ClockDep, device_id: DeviceId, body: DevicePatch
) -> DevicePublic:
    """Change model, name, place, interval or resident. Community and class are fixed."""
    try:
        outcome = devices.update_device(
            conn, device_id, changed_fields(body), visible=principal.sees
        )
    except devices.LifecycleError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    if isinstance(outcome, device_checks.Problem):
        raise _problem(outcome, device_id)
    return device_public(outcome, clock())


def _transition(
    conn: psycopg.Connection[Any], device_id: str, state: str, now: datetime
) -> DevicePublic:
    try:
        return device_public(devices.set_state(conn, device_id, state), now)
    except devices.LifecycleError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None


@router.post("/{device_id}/maintenance")
def to_maintenance(
    conn: ConnDep, clock: ClockDep, _p: Authorized, device_id: DeviceId
) -> DevicePublic:
    """In maintenance: readings are still stored, its alerts are suppressed."""
    return _transition(conn, device_id, "maintenance", clock())


@router.post("/{device_id}/activate")
def activate(conn: ConnDep, clock: ClockDep, _p: Authorized, device_id: DeviceId) -> DevicePublic:
    """Back from maintenance."""
    return _transition(conn, device_id, "active", clock())


@router.post("/{device_id}/decommission")
def retire(conn: ConnDep, clock: ClockDep, _p: Authorized, device_id: DeviceId) -> DevicePublic:
    """For good: the pipeline refuses its messages at once, the broker from the next
    ``smartcommunity broker export``. Its history stays."""
    return device_public(devices.decommission(conn, device_id), clock())


@router.post("/{device_id}/credentials")
def rotate(conn: ConnDep, clock: ClockDep, _p: Authorized, device_id: DeviceId) -> DeviceRegistered:
    """A new MQTT password, shown once. The broker takes it at the next export."""
    try:
        record, password = devices.rotate_credentials(conn, device_id)
    except devices.LifecycleError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
    return _registered(record, password, clock())
