"""The one place that decides whether a request may proceed: role, then community.

``authorize`` is a dependency of the whole ``/api/v1`` router:

1. the route's family (``core.access.Family``, from its path) and method decide
   whether the user's role may read or change it (403 otherwise; the answer does
   not depend on any id, so it reveals nothing);
2. every id in the path (``device_id``, ``alert_id``, ...) is looked up and its
   community checked against the user's communities; so is a ``community_id`` or
   ``device_id`` in a JSON body. Something in another community gets exactly the
   answer something that does not exist gets: ids cannot be probed.

Lists filter with ``community_filter(principal)``. A route whose family or path
parameter is unknown here is refused (fail closed); a unit test walks the app's
routes so that a new one cannot ship without a decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.routing import APIRoute
from psycopg import sql

from api.auth import Principal, require_token
from api.deps import ConnDep
from core.access import Family, allowed

__all__ = [
    "API_PREFIX",
    "COMMUNITY_HINT",
    "PATH_PARAMETERS",
    "ROUTE_FAMILIES",
    "Authorized",
    "authorize",
    "community_clause",
    "community_filter",
    "family_of",
    "not_found",
    "unknown_in_body",
]

API_PREFIX = "/api/v1"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# First path segment -> family; some sub-resources of communities and devices differ.
ROUTE_FAMILIES: dict[str, Family] = {
    "communities": Family.COMMUNITIES,
    "devices": Family.DEVICES,
    "alerts": Family.ALERTS,
    "maintenance": Family.MAINTENANCE,
    "rules": Family.RULES,
    "webhooks": Family.WEBHOOKS,
    "residents": Family.RESIDENTS,
    "visits": Family.VISITS,
    "dead-letters": Family.DEAD_LETTERS,
    "users": Family.USERS,
    "tokens": Family.USERS,
    "audit": Family.AUDIT,
    "me": Family.SELF,
}
_SUB_FAMILIES: dict[str, Family] = {
    "buildings": Family.LOCATIONS,
    "readings": Family.TELEMETRY,
    "events": Family.TELEMETRY,
    "aggregates": Family.TELEMETRY,
    "latest": Family.TELEMETRY,
    "status": Family.TELEMETRY,
}


def family_of(path: str) -> Family | None:
    """The family of a route path template, e.g. ``/api/v1/devices/{device_id}/readings``.

    FastAPI may give a route's path with or without the ``/api/v1`` prefix of the
    router it is included in; both name the same family.
    """
    parts = path.removeprefix(API_PREFIX).lstrip("/").split("/")
    family = ROUTE_FAMILIES.get(parts[0])
    if family in (Family.COMMUNITIES, Family.DEVICES) and len(parts) >= 3:
        family = _SUB_FAMILIES.get(parts[2], family)
    return family


def not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=detail)


def unknown_in_body(field: str, value: str, hint: str = "") -> HTTPException:
    """A body naming something that does not exist (or is not the caller's): 422."""
    kind = field.removesuffix("_id")
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[
            {
                "loc": ["body", field],
                "msg": f"unknown {kind} {value!r}{hint}",
                "type": f"unknown_{kind}",
            }
        ],
    )


Conn = psycopg.Connection[Any]


@dataclass(frozen=True, slots=True)
class Located:
    visible: bool
    # Applies to every community (a rule or webhook without one): only an
    # administrator of every community may change it.
    everywhere: bool = False


Locate = Callable[[Conn, str, Principal, Family], Located | None]


@dataclass(frozen=True, slots=True)
class _Param:
    """How to find the community of one kind of path id, and how "not found" reads."""

    message: Callable[[str], str]
    locate: Locate  # None: does not exist
    integer: bool = False
    # Methods that create what does not exist yet (PUT of a rule): no 404 for them.
    creates: frozenset[str] = frozenset()


def _community_of(query: str) -> Locate:
    def locate(conn: Conn, value: str, principal: Principal, _family: Family) -> Located | None:
        row = conn.execute(query.encode(), (value,)).fetchone()
        if row is None:
            return None
        if row[0] is None:
            return Located(visible=True, everywhere=True)
        return Located(visible=principal.sees(row[0]))

    return locate


def _user(conn: Conn, user_id: str, principal: Principal, _family: Family) -> Located | None:
    row = conn.execute(
        "SELECT all_communities,"
        " array(SELECT community_id FROM user_communities WHERE user_id = u.id)"
        " FROM users AS u WHERE id = %s",
        (int(user_id),),
    ).fetchone()
    if row is None:
        return None
    if principal.communities is None:
        return Located(visible=True)
    everywhere, communities = row
    # A scoped administrator manages the users of their own communities only (a user
    # of no community at all is for the administrators of every community).
    mine = bool(communities) and set(communities) <= principal.communities
    return Located(visible=not everywhere and mine)


def _token(conn: Conn, token_id: str, principal: Principal, family: Family) -> Located | None:
    row = conn.execute("SELECT user_id FROM api_tokens WHERE id = %s", (int(token_id),)).fetchone()
    if row is None:
        return None
    if family is Family.SELF:
        return Located(visible=row[0] == principal.user_id)
    return _user(conn, str(row[0]), principal, family)


def _nested(_conn: Conn, _value: str, _principal: Principal, _family: Family) -> Located:
    # Inside /communities/{community_id}/...: the community check covers it, the
    # route answers 404 for one that does not exist.
    return Located(visible=True)


PATH_PARAMETERS: dict[str, _Param] = {
    "community_id": _Param(
        lambda v: f"no community {v!r}", _community_of("SELECT id FROM communities WHERE id = %s")
    ),
    "device_id": _Param(
        lambda v: f"no device {v!r}",
        _community_of("SELECT community_id FROM devices WHERE id = %s"),
    ),
    "resident_id": _Param(
        lambda v: f"no resident {v!r}",
        _community_of("SELECT community_id FROM residents WHERE id = %s"),
    ),
    "alert_id": _Param(
        lambda v: f"no alert {v}",
        _community_of("SELECT community_id FROM alerts WHERE id = %s::bigint"),
        integer=True,
    ),
    "window_id": _Param(
        lambda v: f"no current window {v}",
        _community_of("SELECT community_id FROM maintenance_windows WHERE id = %s::bigint"),
        integer=True,
    ),
    "rule_id": _Param(
        lambda v: f"no rule {v!r}",
        _community_of("SELECT definition->'scope'->>'community' FROM alert_rules WHERE id = %s"),
        creates=frozenset({"PUT"}),
    ),
    "webhook_id": _Param(
        lambda v: f"no webhook {v}",
        _community_of("SELECT community_id FROM webhooks WHERE id = %s::bigint"),
        integer=True,
    ),
    "delivery_id": _Param(
        lambda v: f"no dead delivery {v}",
        _community_of(
            "SELECT w.community_id FROM webhook_deliveries AS d"
            " JOIN webhooks AS w ON w.id = d.webhook_id WHERE d.id = %s::bigint"
        ),
        integer=True,
    ),
    "user_id": _Param(lambda v: f"no user {v}", _user, integer=True),
    "token_id": _Param(lambda v: f"no token {v}", _token, integer=True),
    "building_id": _Param(lambda v: f"no building {v!r}", _nested),
    "unit_id": _Param(lambda v: f"no unit {v!r}", _nested),
}
# Body fields checked like path ids; a hidden one reads as unknown (422), as the
# routes answer for one that does not exist.
COMMUNITY_HINT = ": create it first with POST /api/v1/communities"
_BODY_FIELDS = {
    "community_id": ("SELECT id FROM communities WHERE id = %s", COMMUNITY_HINT),
    "device_id": ("SELECT community_id FROM devices WHERE id = %s", ""),
}
_BIGINT = 2**63 - 1


def _is_bigint(value: str) -> bool:
    try:
        return abs(int(value)) <= _BIGINT
    except ValueError:
        return False


async def _json_body(request: Request) -> dict[str, Any]:
    """The JSON object a write request carries (FastAPI caches the body), else {}."""
    if request.method in _READ_METHODS:
        return {}
    if "json" not in request.headers.get("content-type", ""):
        return {}
    try:
        body = json.loads(await request.body())
    except ValueError:
        return {}  # the route's own validation answers
    return body if isinstance(body, dict) else {}


def authorize(
    request: Request,
    conn: ConnDep,
    principal: Annotated[Principal, Depends(require_token)],
    body: Annotated[dict[str, Any], Depends(_json_body)],
) -> Principal:
    route = request.scope.get("route")
    path = route.path if isinstance(route, APIRoute) else request.url.path
    family = family_of(path)
    if family is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="no access policy for this route")
    write = request.method not in _READ_METHODS
    if not allowed(principal.role, family, write=write):
        action = "change" if write else "read"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"the {principal.role} role may not {action} {family.value.replace('_', ' ')}",
        )
    everywhere = HTTPException(
        status.HTTP_403_FORBIDDEN,
        detail="only an administrator of every community may change what applies to all",
    )
    scoped_write = write and principal.communities is not None
    for name, value in request.path_params.items():
        param = PATH_PARAMETERS.get(name)
        if param is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="no access policy for this route")
        if param.integer and not _is_bigint(value):
            continue  # the route's validation answers 422
        located = param.locate(conn, str(value), principal, family)
        if located is None and request.method in param.creates:
            continue
        if located is None or not located.visible:
            raise not_found(param.message(str(value)))
        if located.everywhere and scoped_write:
            raise everywhere
    for field, (query, hint) in _BODY_FIELDS.items():
        value = body.get(field)
        if not isinstance(value, str) or field in request.path_params:
            continue
        row = conn.execute(query.encode(), (value,)).fetchone()
        if row is not None and not principal.sees(row[0]):
            raise unknown_in_body(field, value, hint)
    if scoped_write and body and family in _SCOPED_BODIES:
        target = _SCOPED_BODIES[family](body)
        if target is None:
            raise everywhere
        if not principal.sees(target):
            raise unknown_in_body("community_id", target, COMMUNITY_HINT)
    return principal


def _rule_community(body: dict[str, Any]) -> str | None:
    scope = body.get("scope")
    community = scope.get("community") if isinstance(scope, dict) else None
    return community if isinstance(community, str) else None


def _webhook_community(body: dict[str, Any]) -> str | None:
    community = body.get("community_id")
    return community if isinstance(community, str) else None


# Families whose bodies say where they apply; no community means every community.
_SCOPED_BODIES: dict[Family, Callable[[dict[str, Any]], str | None]] = {
    Family.RULES: _rule_community,
    Family.WEBHOOKS: _webhook_community,
}


Authorized = Annotated[Principal, Depends(authorize)]


def community_filter(
    principal: Principal, column: str = "community_id"
) -> tuple[sql.Composable, list[object]]:
    """A WHERE term keeping the principal's communities, and its parameters."""
    if principal.communities is None:
        return sql.SQL("true"), []
    return (
        sql.SQL("{} = ANY(%s)").format(sql.Identifier(*column.split("."))),
        [sorted(principal.communities)],
    )


def community_clause(
    principal: Principal, expression: str = "community_id", *, everywhere: bool = False
) -> tuple[str, list[object]]:
    """``community_filter`` for queries built from constant strings: ``expression`` is
    code, never input. ``everywhere``: rows without a community (global) are kept."""
    if principal.communities is None:
        return "true", []
    clause = f"{expression} = ANY(%s)"
    if everywhere:
        clause = f"({expression} IS NULL OR {clause})"
    return clause, [sorted(principal.communities)]
