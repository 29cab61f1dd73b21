"""Who may do what to which object: role, then the parsed object in the caller's scope.

Three layers, each enough on its own for what it covers (docs/security.md):

1. ``authorize`` (a dependency of the whole ``/api/v1`` router): the route's family
   (``core.access.Family``, from its path) and method decide whether the user's role
   may read or change it (403; the answer depends on no id, so it reveals nothing).
   It also refuses a JSON route's body sent as anything but JSON (415), so no body
   is ever read one way here and another way by the route.
2. Every id in a path is declared with one of the ``*Id`` types below: a dependency
   that parses the value with the same strict type the route receives, loads the
   object and answers 404 for anything outside the caller's communities, exactly as
   for an object that does not exist (OWASP API1). ``check_routes`` refuses to
   build an app with a path parameter that does not go through one of them.
   Bodies naming a community, device or resident are checked after pydantic parsed
   them (``body_community`` and friends), never by peeking at raw bytes.
3. PostgreSQL row-level security (migration 0007): the API's queries run as
   ``sc_api`` with the caller's communities in ``sc.communities``, so a route that
   forgets its check returns nothing of another community instead of leaking it.

Refused attempts at another community's objects are written to the audit log
(action ``refused``) with the actor, route and target.
"""

from __future__ import annotations

import email.message
import inspect
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Path, Request, status
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, BeforeValidator, Field

from api.auth import Principal, require_token
from api.deps import ConnDep
from core.access import Family, allowed
from store.accounts import token_user, user_scope
from store.audit import record_refusal as write_refusal
from store.scoping import dispatch_owner, locate
from store.sessions import set_communities

__all__ = [
    "API_PREFIX",
    "BIGINT_MAX",
    "COMMUNITY_HINT",
    "ERROR_RESPONSES",
    "ROUTE_FAMILIES",
    "SCOPED_PARAMETERS",
    "AlertId",
    "Authorized",
    "BuildingId",
    "CommunityId",
    "DeliveryId",
    "DeviceId",
    "IncidentId",
    "IntId",
    "OwnDispatchId",
    "OwnTokenId",
    "Problem",
    "ResidentId",
    "ResponderId",
    "RuleId",
    "TeamId",
    "TextId",
    "TokenId",
    "UserId",
    "ValidationProblem",
    "WebhookId",
    "WindowId",
    "authorize",
    "body_community",
    "body_device",
    "body_resident",
    "check_routes",
    "family_of",
    "locate",
    "not_found",
    "record_refusal",
    "set_request_scope",
    "unknown_in_body",
    "widen_scope",
]

_LOG = logging.getLogger(__name__)

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
    "responders": Family.RESPONDERS,
    "teams": Family.RESPONDERS,
    "incidents": Family.INCIDENTS,
}
_SUB_FAMILIES: dict[str, Family] = {
    "buildings": Family.LOCATIONS,
    "readings": Family.TELEMETRY,
    "events": Family.TELEMETRY,
    "aggregates": Family.TELEMETRY,
    "latest": Family.TELEMETRY,
    "status": Family.TELEMETRY,
    "duty": Family.RESPONDERS,
    "incident-targets": Family.INCIDENT_TARGETS,
}


class Problem(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    """FastAPI's answer to an invalid parameter or body (what it documents as 422)."""

    detail: list[dict[str, Any]]


# The answers every /api/v1 route may give besides its own, for the OpenAPI. FastAPI
# documents 422 (with its validation-error body) for every route that has parameters.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "No, unknown, revoked or expired bearer token, or a disabled user",
    },
    403: {
        "model": Problem,
        "description": "The role may not do this, or it applies to every community",
    },
    404: {"model": Problem, "description": "No such object in the caller's communities"},
    413: {"description": "Body larger than the route accepts"},
    415: {"model": Problem, "description": "A JSON body sent with another Content-Type"},
}


def family_of(path: str) -> Family | None:
    """The family of a route path template, e.g. ``/api/v1/devices/{device_id}/readings``."""
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


_EVERYWHERE = "only an administrator of every community may change what applies to all"


def _everywhere() -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=_EVERYWHERE)


# --- the id types --------------------------------------------------------------------------

BIGINT_MAX = 2**63 - 1
# Canonical decimal only: "4.0", "+4", "4e0", "4_0", " 4", "4\n" are not ids (Python's
# int() and pydantic's lax mode accept some of them, which is how "4.0" once slipped
# past a check that parsed differently from the route).
_INT = re.compile(r"0|[1-9][0-9]{0,18}")
# The registry's id alphabet (core.topics); no control characters, so never a NUL.
_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def _int_id(value: object) -> object:
    if isinstance(value, str) and _INT.fullmatch(value) is None:
        raise ValueError("an id is a whole number in decimal digits")
    return value


def _text_id(value: object) -> object:
    if isinstance(value, str) and _TEXT.fullmatch(value) is None:
        raise ValueError("an id is 1-64 letters, digits, '_', '.', ':' or '-'")
    return value


IntId = Annotated[int, BeforeValidator(_int_id), Field(ge=0, le=BIGINT_MAX)]
TextId = Annotated[
    str, BeforeValidator(_text_id), Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
]

Conn = psycopg.Connection[Any]


def record_refusal(
    conn: Conn,
    principal: Principal,
    request: Request,
    entity: str,
    target: object,
    community: str | None = None,
) -> None:
    """Audit a refused attempt at another community's object (or a wider user's):
    who, which route, what. The target's community's administrators see it."""
    route = request.scope.get("route")
    template = route.path if isinstance(route, APIRoute) else request.url.path
    if not template.startswith(API_PREFIX + "/"):  # the route's path inside its router
        template = API_PREFIX + template
    try:
        # A savepoint: a failed insert must not abort the request's transaction.
        write_refusal(
            conn, principal.actor, entity, target, community, method=request.method, route=template
        )
    except psycopg.Error as exc:  # the refusal stands even if it cannot be written
        _LOG.warning("could not audit a refusal: %s", exc)


# Global objects only those of every community may even see (a global rule is read by
# all: it applies to their communities too).
_PRIVATE_GLOBALS = frozenset({"webhook", "delivery"})


def _checks_off(request: Request) -> bool:
    """The test hook that proves row-level security on its own (tests/integration/
    test_security.py): with it, the object and body checks here let everything through."""
    return bool(getattr(request.app.state, "test_without_object_checks", False))


def _scoped(
    conn: Conn, principal: Principal, request: Request, entity: str, target: object, message: str
) -> str | None:
    """``entity``'s community (None: global); 404 if missing or not the caller's."""
    if _checks_off(request):
        return None
    exists, community = locate(conn, entity, target)
    if not exists:
        raise not_found(message)
    hidden = community is None and entity in _PRIVATE_GLOBALS and principal.communities is not None
    if hidden or not principal.sees(community):
        record_refusal(conn, principal, request, entity, target, community)
        raise not_found(message)
    global_write = community is None and request.method not in _READ_METHODS
    if global_write and principal.communities is not None:
        raise _everywhere()
    return community


_Check = Callable[[Conn, Principal, Request, Any], None]


def _path_id(name: str, id_type: object, check: _Check) -> Callable[..., Any]:
    """The dependency that resolves the path parameter ``name``: parsed as ``id_type``,
    then ``check``ed (it raises 404 for an object outside the caller's scope).

    FastAPI reads a dependency's parameters from its signature, so ``name`` is
    written there, before the request, connection and principal every check takes."""

    def resolve(request: Request, conn: ConnDep, principal: Authorized, **path: Any) -> Any:
        value = path[name]
        check(conn, principal, request, value)
        return value

    shared = list(inspect.signature(resolve).parameters.values())[:-1]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameter = inspect.Parameter(name, kind, annotation=Annotated[id_type, Path()])
    resolve.__signature__ = inspect.Signature([parameter, *shared])  # type: ignore[attr-defined]
    resolve.__name__ = resolve.__qualname__ = f"resolve_{name}"
    return resolve


def _in_scope(entity: str, label: str | None = None) -> _Check:
    """``_scoped`` for ``entity``; its 404 says "no <label> <id>"."""

    def check(conn: Conn, principal: Principal, request: Request, target: object) -> None:
        _scoped(conn, principal, request, entity, target, f"no {label or entity} {target!r}")

    return check


def _rule_in_scope(conn: Conn, principal: Principal, request: Request, rule_id: str) -> None:
    if request.method == "PUT" and not locate(conn, "rule", rule_id)[0]:
        return  # PUT creates it; the body's scope is checked after parsing
    _scoped(conn, principal, request, "rule", rule_id, f"no rule {rule_id!r}")


def _refused(
    conn: Conn,
    principal: Principal,
    request: Request,
    entity: str,
    target: int,
    community: str | None = None,
) -> HTTPException:
    """Audit the refusal, and answer as for an object that does not exist."""
    record_refusal(conn, principal, request, entity, target, community)
    return not_found(f"no {entity} {target}")


def _user_visible(conn: Conn, principal: Principal, user_id: int) -> bool | None:
    """None: no such user. A scoped administrator manages only users whose every
    community is one of theirs: never one of every community (a global administrator)
    or of none (those are for the administrators of every community)."""
    found = user_scope(conn, user_id)
    if found is None:
        return None
    if principal.communities is None:
        return True
    everywhere, communities = found
    return not everywhere and bool(communities) and set(communities) <= principal.communities


def _user_check(conn: Conn, principal: Principal, request: Request, user_id: int) -> None:
    visible = _user_visible(conn, principal, user_id)
    if visible is None:
        raise not_found(f"no user {user_id}")
    if not visible:
        raise _refused(conn, principal, request, "user", user_id)


def _token_owner(conn: Conn, token_id: int) -> int:
    owner = token_user(conn, token_id)
    if owner is None:
        raise not_found(f"no token {token_id}")
    return owner


def _token_check(conn: Conn, principal: Principal, request: Request, token_id: int) -> None:
    if not _user_visible(conn, principal, _token_owner(conn, token_id)):
        raise _refused(conn, principal, request, "token", token_id)


def _own_token_check(conn: Conn, principal: Principal, request: Request, token_id: int) -> None:
    if _token_owner(conn, token_id) != principal.user_id:
        raise _refused(conn, principal, request, "token", token_id)


def _own_dispatch_check(
    conn: Conn, principal: Principal, request: Request, dispatch_id: int
) -> None:
    """/me/dispatches/{dispatch_id}: only a dispatch to the caller's own responder record."""
    row = dispatch_owner(conn, dispatch_id)
    if row is None:
        raise not_found(f"no dispatch {dispatch_id}")
    if row[0] != principal.user_id:
        raise _refused(conn, principal, request, "dispatch", dispatch_id, row[1])


_community = _path_id("community_id", TextId, _in_scope("community"))
_device = _path_id("device_id", TextId, _in_scope("device"))
_resident = _path_id("resident_id", TextId, _in_scope("resident"))
_alert = _path_id("alert_id", IntId, _in_scope("alert"))
_window = _path_id("window_id", IntId, _in_scope("maintenance", "current window"))
_rule = _path_id("rule_id", TextId, _rule_in_scope)
_webhook = _path_id("webhook_id", IntId, _in_scope("webhook"))
_delivery = _path_id("delivery_id", IntId, _in_scope("delivery", "dead delivery"))
_user = _path_id("user_id", IntId, _user_check)
_token = _path_id("token_id", IntId, _token_check)
_own_token = _path_id("token_id", IntId, _own_token_check)
_responder = _path_id("responder_id", TextId, _in_scope("responder"))
_team = _path_id("team_id", TextId, _in_scope("team"))
_incident = _path_id("incident_id", IntId, _in_scope("incident"))
_own_dispatch = _path_id("dispatch_id", IntId, _own_dispatch_check)


def _building(
    community_id: Annotated[str, Depends(_community)], building_id: Annotated[TextId, Path()]
) -> str:
    # Inside /communities/{community_id}: the community's check covers it; the
    # route answers 404 for a building that community does not have.
    return building_id


CommunityId = Annotated[str, Depends(_community)]
DeviceId = Annotated[str, Depends(_device)]
ResidentId = Annotated[str, Depends(_resident)]
BuildingId = Annotated[str, Depends(_building)]
AlertId = Annotated[int, Depends(_alert)]
WindowId = Annotated[int, Depends(_window)]
RuleId = Annotated[str, Depends(_rule)]
WebhookId = Annotated[int, Depends(_webhook)]
DeliveryId = Annotated[int, Depends(_delivery)]
UserId = Annotated[int, Depends(_user)]
TokenId = Annotated[int, Depends(_token)]
OwnTokenId = Annotated[int, Depends(_own_token)]  # /me/tokens/{token_id}: the caller's only
ResponderId = Annotated[str, Depends(_responder)]
TeamId = Annotated[str, Depends(_team)]
IncidentId = Annotated[int, Depends(_incident)]
OwnDispatchId = Annotated[int, Depends(_own_dispatch)]  # a responder's own dispatch

# path parameter -> the dependencies allowed to resolve it (check_routes).
SCOPED_PARAMETERS: dict[str, frozenset[Callable[..., Any]]] = {
    "community_id": frozenset({_community}),
    "device_id": frozenset({_device}),
    "resident_id": frozenset({_resident}),
    "building_id": frozenset({_building}),
    "alert_id": frozenset({_alert}),
    "window_id": frozenset({_window}),
    "rule_id": frozenset({_rule}),
    "webhook_id": frozenset({_webhook}),
    "delivery_id": frozenset({_delivery}),
    "user_id": frozenset({_user}),
    "token_id": frozenset({_token, _own_token}),
    "responder_id": frozenset({_responder}),
    "team_id": frozenset({_team}),
    "incident_id": frozenset({_incident}),
    "dispatch_id": frozenset({_own_dispatch}),
}


# --- bodies, after parsing -----------------------------------------------------------------

COMMUNITY_HINT = ": create it first with POST /api/v1/communities"


def body_community(
    conn: Conn,
    principal: Principal,
    request: Request,
    community_id: str | None,
    *,
    field: str = "community_id",
) -> None:
    """A parsed body's community: None (every community) is for global administrators;
    another community's reads as one that does not exist (422)."""
    if _checks_off(request):
        return
    if community_id is None:
        if principal.communities is not None:
            raise _everywhere()
        return
    exists = locate(conn, "community", community_id)[0]
    if exists and principal.sees(community_id):
        return
    if exists:
        record_refusal(conn, principal, request, "community", community_id, community_id)
    raise unknown_in_body(field, community_id, COMMUNITY_HINT)


def _body_object(
    conn: Conn, principal: Principal, request: Request, entity: str, target: str
) -> None:
    """A parsed body's device or resident of another community reads as unknown (422)."""
    if _checks_off(request):
        return
    exists, community = locate(conn, entity, target)
    if exists and not principal.sees(community):
        record_refusal(conn, principal, request, entity, target, community)
        raise unknown_in_body(f"{entity}_id", target)


def body_device(conn: Conn, principal: Principal, request: Request, device_id: str) -> None:
    _body_object(conn, principal, request, "device", device_id)


def body_resident(conn: Conn, principal: Principal, request: Request, resident_id: str) -> None:
    _body_object(conn, principal, request, "resident", resident_id)


# --- the router's dependency ---------------------------------------------------------------


def _json_route(request: Request) -> bool:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or route.body_field is None:
        return False
    media_type = getattr(route.body_field.field_info, "media_type", "application/json")
    return _is_json(media_type)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def _body_type(request: Request) -> None:
    """415 for a JSON route's non-empty body not labelled JSON: FastAPI would hand it
    to the model as bytes, or (no Content-Type) parse it anyway."""
    if request.method in _READ_METHODS or not _json_route(request):
        return
    if await request.body() and not _is_json(request.headers.get("content-type")):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="send the body as application/json"
        )


def set_request_scope(conn: Conn, principal: Principal) -> None:
    """Row-level security from here on: this transaction's queries see the caller's
    communities only. ``set_config(..., true)`` makes it local to the request's
    transaction (``api.deps.get_conn``), so it cannot outlive the request on the
    pooled connection, even when the request fails or is abandoned half-way."""
    set_communities(conn, principal.communities)


def widen_scope(conn: Conn, principal: Principal, community_id: str) -> None:
    """Add a community this request creates to its row-level security scope."""
    if principal.communities is not None:
        set_communities(conn, principal.communities | {community_id})


def authorize(
    request: Request,
    conn: ConnDep,
    principal: Annotated[Principal, Depends(require_token)],
    _body: Annotated[None, Depends(_body_type)],
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
    set_request_scope(conn, principal)
    return principal


Authorized = Annotated[Principal, Depends(authorize)]


def check_routes(app: FastAPI) -> None:
    """Fail closed at start-up: every path parameter of an /api/v1 route must be resolved
    by its scope dependency, never taken raw by the route."""
    problems: list[str] = []
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path or ""
        if not isinstance(route, APIRoute) or not path.startswith(API_PREFIX + "/"):
            continue
        if path == API_PREFIX + "/alerts/stream":
            continue
        if family_of(path) is None:
            problems.append(f"{path}: no family")
        for param in route.dependant.path_params:
            problems.append(f"{path}: {param.name} taken raw")
        stack = list(route.dependant.dependencies)
        while stack:
            dep = stack.pop()
            for param in dep.path_params:
                allowed_by = SCOPED_PARAMETERS.get(param.name, frozenset())
                if dep.call not in allowed_by:
                    problems.append(f"{path}: {param.name} resolved by {dep.call}")
            stack.extend(dep.dependencies)
    if problems:
        raise RuntimeError("routes without an object-level check: " + "; ".join(problems))
