"""Lists across communities: an administrator of A sees A's rows in every list and
none of B's; asking for B by name reads as asking for a community that does not exist."""

from __future__ import annotations

import pytest

from core.access import Role
from store.accounts import create_user
from tests.integration.access_support import (
    World,
    api_request,
    fresh,
    world_fixture,  # noqa: F401 - the world fixture
)

pytestmark = pytest.mark.integration


LISTS = [
    ("viewer", "/communities", "id"),
    ("viewer", "/devices", "community_id"),
    ("operator", "/residents", "community_id"),
    ("viewer", "/alerts", "community_id"),
    ("viewer", "/maintenance", "community_id"),
    ("admin", "/webhooks", "community_id"),
    ("admin", "/audit", "community_id"),
]


@pytest.mark.parametrize(("role", "path", "column"), LISTS)
def test_lists_show_only_the_users_communities(
    world: World, role: str, path: str, column: str
) -> None:
    for community in (world.a, world.b):  # something of each in every list
        world.device(community)
        world.resident(community)
        world.alert(community)
        world.window(community)
        world.webhook(community)
    status, answer = api_request(world, "GET", path, None, role)
    assert status == 200
    rows = answer["data"] if isinstance(answer, dict) else answer
    seen = {row[column] for row in rows}
    assert world.a in seen
    assert world.b not in seen
    # Asking for B by name is answered as for a community that does not exist.
    if path not in ("/communities", "/webhooks", "/audit"):
        for community in (world.b, fresh("nowhere")):
            status, answer = api_request(
                world, "GET", f"{path}?community_id={community}", None, role
            )
            assert status == 200
            rows = answer["data"] if isinstance(answer, dict) else answer
            assert rows == []


def test_rules_of_another_community_are_not_listed(world: World) -> None:
    mine, theirs = world.rule(world.a), world.rule(world.b)
    status, answer = api_request(world, "GET", "/rules", None, "viewer")
    assert status == 200
    ids = {rule["id"] for rule in answer}
    assert mine in ids
    assert theirs not in ids


def test_dead_letters_of_another_community_are_not_listed(world: World) -> None:
    for community in (world.a, world.b):
        world.db.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)"
            " VALUES (now(), %s, 'x', 'unknown_device', 'test')",
            (f"community/{community}/fire/{fresh('d')}/telemetry",),
        )
    status, answer = api_request(world, "GET", "/dead-letters?limit=1000", None, "installer")
    assert status == 200
    topics = [row["topic"] for row in answer["data"]]
    assert any(f"community/{world.a}/" in t for t in topics)
    assert not any(f"community/{world.b}/" in t for t in topics)


def test_users_of_other_communities_are_not_listed(world: World) -> None:
    theirs = world.user(world.b)
    nobodys = str(create_user(world.db, fresh("u"), Role.VIEWER, []).id)
    status, answer = api_request(world, "GET", "/users?limit=1000", None, "admin")
    assert status == 200
    ids = {str(u["id"]) for u in answer["data"]}
    assert str(world.user_ids["viewer"]) in ids
    assert theirs not in ids
    assert nobodys not in ids
    assert api_request(world, "GET", f"/users/{nobodys}", None, "admin")[0] == 404
    # A scoped administrator cannot hand out another community, nor every community.
    for body in (
        {"name": fresh("u"), "role": "admin", "communities": [world.b]},
        {"name": fresh("u"), "role": "admin", "all_communities": True},
    ):
        status, _ = api_request(world, "POST", "/users", body, "admin")
        assert status in (403, 422)
