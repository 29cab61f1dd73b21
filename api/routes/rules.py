"""``/api/v1/rules``: alert rules CRUD, and ``/api/v1/webhooks``: where alerts are posted.

A rule body is validated against ``core.rules.Rule``; a wrong field comes back
as a 422 whose ``loc`` names it, e.g. ``["body", "threshold", "clear"]``.
Running engines pick up a change within a second (``revision`` grows), no restart.
"""

from __future__ import annotations

import secrets
import socket
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, HTTPException, Request, status
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError

from api.auth import Principal
from api.deps import ConnDep, SettingsDep
from api.scope import (
    Authorized,
    DeliveryId,
    RuleId,
    TextId,
    WebhookId,
    body_community,
    body_device,
    community_clause,
    locate,
)
from core.rules import Rule, Severity, dump_rule, parse_rule
from core.webhook_targets import private_destination

__all__ = ["RulePublic", "router", "webhooks_router"]

router = APIRouter(prefix="/rules", tags=["rules"])
webhooks_router = APIRouter(prefix="/webhooks", tags=["alerts"])
_OUT = ConfigDict(frozen=True)

RuleBody = Annotated[Rule, Body(description="A rule; `type` selects its kind")]


class RulePublic(BaseModel):
    model_config = _OUT

    id: str
    enabled: bool
    source: str = Field(description="'default' (shipped pack), 'api' or 'cli'")
    revision: int
    updated_at: datetime
    definition: dict[str, Any]


_COLUMNS = "id, definition, enabled, source, revision, updated_at"
_UPSERT = (
    "INSERT INTO alert_rules (id, definition, enabled, source) VALUES (%s, %s, %s, 'api')"  # noqa: S608 - constant columns, values are parameters
    " ON CONFLICT (id) DO UPDATE SET definition = excluded.definition,"
    " enabled = excluded.enabled, source = 'api',"
    " revision = nextval('alert_rules_revision'), updated_at = now()"
    f" RETURNING {_COLUMNS}"
)


def _public(row: tuple[Any, ...]) -> RulePublic:
    rid, definition, enabled, source, revision, updated_at = row
    return RulePublic(
        id=rid,
        enabled=enabled,
        source=source,
        revision=revision,
        updated_at=updated_at,
        definition={**definition, "enabled": enabled},
    )


def _get(conn: psycopg.Connection[Any], rule_id: str) -> RulePublic:
    row = conn.execute(f"SELECT {_COLUMNS} FROM alert_rules WHERE id = %s", (rule_id,)).fetchone()  # noqa: S608
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id!r}")
    return _public(row)


def _save(conn: psycopg.Connection[Any], rule: Rule) -> RulePublic:
    row = conn.execute(_UPSERT, (rule.id, Jsonb(dump_rule(rule)), rule.enabled)).fetchone()
    assert row is not None
    return _public(row)


@router.get("")
def list_rules(
    conn: ConnDep, principal: Authorized, type: str | None = None, enabled: bool | None = None
) -> list[RulePublic]:
    """Every rule (of your communities, and those for all), by id."""
    scope, params = community_clause(
        principal, "definition->'scope'->>'community'", everywhere=True
    )
    where: list[str] = [scope]
    if type is not None:
        where.append("definition->>'type' = %s")
        params.append(type)
    if enabled is not None:
        where.append("enabled = %s")
        params.append(enabled)
    query = f"SELECT {_COLUMNS} FROM alert_rules WHERE {' AND '.join(where)} ORDER BY id"  # noqa: S608
    return [_public(row) for row in conn.execute(query, params).fetchall()]


def _check_scope(
    request: Request, conn: psycopg.Connection[Any], principal: Principal, rule: Rule
) -> None:
    """Where the parsed rule applies must be the caller's: no community is everywhere."""
    body_community(conn, principal, request, rule.scope.community, field="scope")
    if rule.scope.device is not None:
        body_device(conn, principal, request, rule.scope.device)


@router.get("/{rule_id}")
def get_rule(conn: ConnDep, rule_id: RuleId) -> RulePublic:
    return _get(conn, rule_id)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_rule(
    request: Request, conn: ConnDep, principal: Authorized, rule: RuleBody
) -> RulePublic:
    """Add a rule. 409 if the id is taken (use PUT to replace)."""
    _check_scope(request, conn, principal, rule)
    if locate(conn, "rule", rule.id)[0]:  # taken, in any community: ids are global
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"rule {rule.id!r} already exists")
    return _save(conn, rule)


@router.put("/{rule_id}")
def replace_rule(
    request: Request, conn: ConnDep, principal: Authorized, rule_id: RuleId, rule: RuleBody
) -> RulePublic:
    """Create or replace the rule ``rule_id``; the body's id must match."""
    if rule.id != rule_id:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "id"],
                    "msg": f"id {rule.id!r} does not match the path's {rule_id!r}",
                    "type": "value_error",
                }
            ],
        )
    _check_scope(request, conn, principal, rule)
    return _save(conn, rule)


def _set_enabled(conn: psycopg.Connection[Any], rule_id: str, enabled: bool) -> RulePublic:
    current = _get(conn, rule_id)
    try:
        rule = parse_rule({**current.definition, "enabled": enabled})
    except ValidationError as exc:  # stored by an older version; say so rather than 500
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"stored rule invalid: {exc}"
        ) from None
    return _save(conn, rule)


@router.post("/{rule_id}/enable")
def enable_rule(conn: ConnDep, rule_id: RuleId) -> RulePublic:
    return _set_enabled(conn, rule_id, True)


@router.post("/{rule_id}/disable")
def disable_rule(conn: ConnDep, rule_id: RuleId) -> RulePublic:
    """Stop evaluating a rule; its open alerts stay until resolved."""
    return _set_enabled(conn, rule_id, False)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(conn: ConnDep, rule_id: RuleId) -> None:
    with conn.transaction():
        cur = conn.execute("DELETE FROM alert_rules WHERE id = %s", (rule_id,))
        if cur.rowcount != 1:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id!r}")
        conn.execute("DELETE FROM alert_rule_state WHERE rule_id = %s", (rule_id,))


# -- webhooks ---------------------------------------------------------------------------


class WebhookCreate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl
    secret: Annotated[str | None, Field(min_length=16, max_length=200)] = Field(
        default=None, description="HMAC key; generated (and shown once) when omitted"
    )
    community_id: TextId | None = None
    min_severity: Severity = Severity.WARNING


class WebhookPublic(BaseModel):
    model_config = _OUT

    id: int
    url: str
    community_id: str | None
    min_severity: Severity
    enabled: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="Shown once: verify X-SC-Signature with it")


class DeliveryPublic(BaseModel):
    model_config = _OUT

    id: int
    webhook_id: int
    alert_id: int
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


_WEBHOOK = "id, url, community_id, min_severity, enabled, created_at"
_DELIVERY = (
    "id, webhook_id, alert_id, state, attempts, next_attempt_at, last_error, created_at,"
    " delivered_at"
)


def _addresses(host: str) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]


@webhooks_router.post("", status_code=status.HTTP_201_CREATED)
def create_webhook(
    request: Request,
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    body: WebhookCreate,
) -> WebhookCreated:
    """Alerts (raised, escalated, resolved) of ``min_severity`` and above are POSTed to
    ``url`` with ``X-SC-Signature: sha256=HMAC(secret, X-SC-Timestamp + "." + body)``."""
    body_community(conn, principal, request, body.community_id)
    reason = private_destination(str(body.url), _addresses)
    if reason is not None and not settings.alerts.webhook_private_destinations:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": ["body", "url"],
                    "msg": f"{reason}: webhooks go to public destinations only",
                    "type": "private_destination",
                }
            ],
        )
    secret = body.secret or secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO webhooks (url, secret, community_id, min_severity) VALUES (%s, %s, %s, %s)"  # noqa: S608 - constant columns, values are parameters
        f" RETURNING {_WEBHOOK}",
        (str(body.url), secret, body.community_id, body.min_severity.value),
    ).fetchone()
    assert row is not None
    return WebhookCreated(**dict(zip(_WEBHOOK.split(", "), row, strict=True)), secret=secret)


@webhooks_router.get("")
def list_webhooks(conn: ConnDep, principal: Authorized) -> list[WebhookPublic]:
    # Global webhooks (and their deliveries) carry every community's alerts to a URL
    # that may hold a secret: for administrators of every community only.
    scope, params = community_clause(principal)
    with conn.cursor(row_factory=class_row(WebhookPublic)) as cur:
        return cur.execute(
            f"SELECT {_WEBHOOK} FROM webhooks WHERE {scope} ORDER BY id",  # noqa: S608
            params,
        ).fetchall()


@webhooks_router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(conn: ConnDep, webhook_id: WebhookId) -> None:
    if conn.execute("DELETE FROM webhooks WHERE id = %s", (webhook_id,)).rowcount != 1:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no webhook {webhook_id}")


@webhooks_router.get("/deliveries")
def list_deliveries(
    conn: ConnDep,
    principal: Authorized,
    state: Literal["pending", "delivered", "dead"] | None = None,
    webhook_id: int | None = None,
) -> list[DeliveryPublic]:
    """Deliveries, newest first; ``state=dead`` is the dead-letter list."""
    # Global webhooks (and their deliveries) carry every community's alerts to a URL
    # that may hold a secret: for administrators of every community only.
    scope, params = community_clause(principal)
    where: list[str] = [f"webhook_id IN (SELECT id FROM webhooks WHERE {scope})"]  # noqa: S608 - constant fragments
    if state is not None:
        where.append("state = %s")
        params.append(state)
    if webhook_id is not None:
        where.append("webhook_id = %s")
        params.append(webhook_id)
    with conn.cursor(row_factory=class_row(DeliveryPublic)) as cur:
        return cur.execute(
            f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY id DESC LIMIT 500",
            params,
        ).fetchall()


@webhooks_router.post("/deliveries/{delivery_id}/retry")
def retry_delivery(conn: ConnDep, delivery_id: DeliveryId) -> DeliveryPublic:
    """Send a dead letter again (attempts start over)."""
    with conn.cursor(row_factory=class_row(DeliveryPublic)) as cur:
        row = cur.execute(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0,"  # noqa: S608 - constant columns, values are parameters
            " next_attempt_at = now() WHERE id = %s AND state = 'dead'"
            f" RETURNING {_DELIVERY}",
            (delivery_id,),
        ).fetchone()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dead delivery {delivery_id}")
    return row
