"""The registry's pure parts: passwords, the CSV, connectivity, the broker files, the policy."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from api.app import create_app
from api.scope import SCOPED_PARAMETERS, check_routes, family_of
from core.access import POLICY, Family, Role, allowed
from core.broker_acl import (
    BrokerDevice,
    ServiceAccount,
    ServiceRole,
    render_acl_file,
    render_password_file,
)
from core.connectivity import Connectivity, Presence, judge
from core.device_csv import MAX_CSV_ROWS, CsvFileError, parse_devices_csv
from core.passwords import hash_password, new_secret, verify_password
from core.settings import Settings

# Written by Mosquitto 2.0.11's own mosquitto_passwd for alice / secret.
MOSQUITTO_LINE = (
    "$7$101$tPg5VO3A9jdFcMl+$/SKiqLvWzSAMfd6wtilrZUE3N1VZyYk/zTixppF0WN8nNfW0oQutkgR54XyaVfL"
    "VtBzfwbnrKdHCK88Xtqchyg=="
)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# --- passwords ----------------------------------------------------------------------------


def test_hashes_are_mosquittos_own_format() -> None:
    assert verify_password("secret", MOSQUITTO_LINE)
    assert not verify_password("Secret", MOSQUITTO_LINE)
    salt = base64.b64decode("tPg5VO3A9jdFcMl+")
    assert hash_password("secret", salt=salt) == MOSQUITTO_LINE


def test_generated_secrets_are_long_random_and_never_stored() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(first) >= 43
    hashed = hash_password(first)
    assert first not in hashed
    assert verify_password(first, hashed)
    assert hash_password(first) != hashed  # salted


@pytest.mark.parametrize(
    "bad", ["", "$6$1$a$b", "$7$x$AA==$AA==", "$7$5$!!$AA==", "$7$0$AA==$AA=="]
)
def test_malformed_hashes_verify_nothing(bad: str) -> None:
    assert not verify_password("secret", bad)


# --- the CSV ------------------------------------------------------------------------------

HEADER = "id,community_id,device_class,model,name,expected_interval_s,building,floor,unit\n"


def test_good_file() -> None:
    parsed = parse_devices_csv(
        "\ufeff" + HEADER + "w1,c1,wearable,W1,Watch,60,B1,3,B1-0301\n"
        "\n"  # blank lines are skipped but counted
        "f1,c1,fire,,,,,,\n"
    )
    assert parsed.errors == []
    assert [(r.line, r.spec.id, r.spec.expected_interval_s) for r in parsed.rows] == [
        (2, "w1", 60),
        (4, "f1", 300),
    ]
    assert parsed.rows[0].spec.unit == "B1-0301"
    assert parsed.rows[0].spec.floor == 3


def test_every_bad_row_is_reported_with_its_line_and_reason() -> None:
    text = (
        "device_id,community_id,device_class,expected_interval_s,unit,resident_id\n"
        "ok-1,c1,fire,60,,\n"  # 2
        "bad id,c1,fire,60,,\n"  # 3
        "t1,c1,toaster,60,,\n"  # 4
        "t2,c1,fire,0,,\n"  # 5
        "t3,c1,fire,60,U1,\n"  # 6 unit without building
        "t4,c1,fire,60,,r1\n"  # 7 resident on a smoke detector
        "ok-1,c1,fire,60,,\n"  # 8 duplicate
        "t5,c1\n"  # 9 short row
        '"t6\n6",c1,fire,60,,\n'  # 10-11: a quoted newline in an id
        "a:b,c1,fire,60,,\n"  # 12 ':' cannot be an MQTT user name
    )
    parsed = parse_devices_csv(text)
    assert [r.spec.id for r in parsed.rows] == ["ok-1"]
    reasons = {e.line: e.reason for e in parsed.errors}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 12]
    assert reasons[3].startswith("id: use 1-64 letters")
    assert reasons[4] == (
        "device_class: unknown device class 'toaster':"
        " expected one of access, fire, locker, wearable"
    )
    assert reasons[5] == "expected_interval_s: Input should be greater than or equal to 1"
    assert reasons[6] == "a unit needs its building"
    assert reasons[7] == "only a wearable belongs to a resident"
    assert reasons[8] == "device 'ok-1' is also on line 2"
    assert reasons[9] == "2 cells, the header has 6"
    assert reasons[12] == reasons[3]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty file: the first line must name the columns"),
        ("id,community_id,colour\n", "unknown column 'colour': the columns are"),
        ("id,device_class\n", "missing column community_id"),
        ("id,id,community_id,device_class\n", "column 'id' appears twice"),
    ],
)
def test_a_bad_header_refuses_the_whole_file(text: str, reason: str) -> None:
    with pytest.raises(CsvFileError) as caught:
        parse_devices_csv(text)
    assert caught.value.line == 1
    assert caught.value.reason.startswith(reason)


def test_row_limit() -> None:
    rows = "".join(f"d{n},c1,fire\n" for n in range(MAX_CSV_ROWS + 1))
    with pytest.raises(CsvFileError, match="more than 10,000 devices"):
        parse_devices_csv("id,community_id,device_class\n" + rows)


# --- connectivity -------------------------------------------------------------------------


def presence(
    *,
    data: timedelta | None = None,
    online: bool | None = None,
    status: timedelta | None = None,
    state: str = "active",
) -> Presence:
    return Presence(
        state=state,
        expected_interval_s=60,
        last_received_at=None if data is None else NOW - data,
        online=online,
        status_at=None if status is None else NOW - status,
    )


S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (presence(), Connectivity.NEVER_SEEN),
        (presence(data=30 * S), Connectivity.ONLINE),
        (presence(data=119 * S), Connectivity.ONLINE),
        (presence(data=121 * S), Connectivity.SILENT),  # two intervals without data
        (presence(online=True, status=10 * S), Connectivity.ONLINE),  # connected, no data yet
        (presence(data=600 * S, online=True, status=600 * S), Connectivity.SILENT),  # hung
        (presence(data=30 * S, online=False, status=5 * S), Connectivity.OFFLINE),  # Last Will
        (presence(online=False, status=5 * S), Connectivity.OFFLINE),
        # Data after the offline status: it came back (a late Will must not win).
        (presence(data=2 * S, online=False, status=5 * S), Connectivity.ONLINE),
        (presence(data=2 * S, state="decommissioned"), Connectivity.RETIRED),
    ],
)
def test_connectivity(case: Presence, expected: Connectivity) -> None:
    assert judge(case, NOW) == expected


def test_a_device_goes_silent_as_the_clock_moves() -> None:
    seen = presence(data=timedelta(0))
    assert [judge(seen, NOW + k * 30 * S) for k in (0, 4, 5)] == [
        Connectivity.ONLINE,
        Connectivity.ONLINE,
        Connectivity.SILENT,
    ]


# --- the broker's files ------------------------------------------------------------------


def test_password_and_acl_files() -> None:
    devices = [BrokerDevice("w1", "c1", "wearable", "$7$101$a$b")]
    accounts = [
        ServiceAccount("pipe", ServiceRole.PIPELINE, "$7$1$c$d"),
        ServiceAccount("api", ServiceRole.API, "$7$1$e$f"),
    ]
    # The pipeline's alert publisher has a companion account with the same hash.
    assert render_password_file(devices, accounts) == (
        "pipe:$7$1$c$d\npipe-alerts:$7$1$c$d\napi:$7$1$e$f\nw1:$7$101$a$b\n"
    )
    acl = render_acl_file(devices, accounts, generated_at=NOW)
    assert (
        "user pipe\ntopic read community/+/+/+/+\ntopic write community/+/alerts/#\n\n"
        "user pipe-alerts\ntopic write community/+/alerts/#\n\n"
        "user api\ntopic read community/+/alerts/#\n" in acl
    )
    assert (
        "user w1\ntopic write community/c1/wearable/w1/#\n"
        "topic read community/c1/wearable/w1/cmd\n" in acl
    )
    assert "pattern" not in acl  # explicit grants only
    assert render_password_file([], []) == ""


# --- the policy ---------------------------------------------------------------------------


def test_policy_covers_every_family() -> None:
    assert set(POLICY) == set(Family)


@pytest.mark.parametrize(
    ("role", "family", "write", "expected"),
    [
        (Role.VIEWER, Family.DEVICES, False, True),
        (Role.VIEWER, Family.DEVICES, True, False),
        (Role.INSTALLER, Family.DEVICES, True, True),
        (Role.OPERATOR, Family.DEVICES, True, False),
        (Role.OPERATOR, Family.ALERTS, True, True),
        (Role.INSTALLER, Family.ALERTS, True, False),
        (Role.INSTALLER, Family.RESIDENTS, False, False),
        (Role.VIEWER, Family.RESIDENTS, False, False),
        (Role.OPERATOR, Family.RESIDENTS, False, True),
        (Role.ADMIN, Family.USERS, True, True),
        (Role.OPERATOR, Family.RULES, True, False),
        (Role.VIEWER, Family.SELF, True, True),
    ],
)
def test_policy(role: Role, family: Family, write: bool, expected: bool) -> None:
    assert allowed(role, family, write=write) is expected


def test_every_api_route_has_a_family_and_known_ids() -> None:
    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    paths = [p for p in app.openapi()["paths"] if p.startswith("/api/v1/")]
    assert len(paths) > 30
    for path in paths:
        assert family_of(path) is not None, f"{path} has no access family"
        for part in path.split("/"):
            if part.startswith("{"):
                assert part.strip("{}") in SCOPED_PARAMETERS, f"{path}: {part} has no scope check"


def test_a_route_taking_a_raw_id_stops_the_app() -> None:
    """Fail closed: a path id the route reads itself, without its scope dependency."""
    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    check_routes(app)  # the real app passes

    @app.get("/api/v1/alerts/{alert_id}/raw")
    def raw(alert_id: int) -> int:
        return alert_id

    with pytest.raises(RuntimeError, match="alert_id taken raw"):
        check_routes(app)


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/api/v1/devices", Family.DEVICES),
        ("/devices/{device_id}/readings", Family.TELEMETRY),
        ("/api/v1/devices/import", Family.DEVICES),
        ("/api/v1/communities/{community_id}/buildings/{building_id}/units", Family.LOCATIONS),
        ("/api/v1/communities/{community_id}/status", Family.TELEMETRY),
        ("/api/v1/me/tokens/{token_id}", Family.SELF),
        ("/api/v1/nothing", None),
    ],
)
def test_family_of(path: str, family: Family | None) -> None:
    assert family_of(path) == family
