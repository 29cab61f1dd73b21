"""The access policy: every role and family, and every API route mapped to a family."""

from __future__ import annotations

import pytest

from api.app import create_app
from api.scope import SCOPED_PARAMETERS, check_routes, family_of
from core.access import POLICY, Family, Role, allowed
from core.settings import Settings


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
