"""``/api/v1/rules``: alert rules CRUD, and ``/api/v1/webhooks``: where alerts are posted.

A rule body is validated against ``core.rules.Rule``; a wrong field comes back
as a 422 whose ``loc`` names it, e.g. ``["body", "threshold", "clear"]``.
Running engines pick up a change within a second (``revision`` grows), no restart.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Body, HTTPException, Request, status
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, ValidationError

from api.auth import Principal
from api.deps import ConnDep, SettingsDep
from api.problems import body_error
from api.schemas import Public
from api.scope import (
    Authorized,
    DeliveryId,
    RuleId,
    TextId,
    WebhookId,
    body_community,
    body_device,
    locate,
)
from core.rules import Rule, Severity, parse_rule
from core.webhook_targets import private_destination
from store import rules as rules_store
from store import webhooks as webhooks_store

__all__ = ["RulePublic", "router", "webhooks_router"]

router = APIRouter(prefix="/rules", tags=["rules"])
webhooks_router = APIRouter(prefix="/webhooks", tags=["alerts"])

RuleBody = Annotated[Rule, Body(description="A rule; `type` selects its kind")]


class RulePublic(Public):
    id: str
    enabled: bool
    source: str = Field(description="'default' (shipped pack), 'api' or 'cli'")
    revision: int
    updated_at: datetime
    definition: dict[str, Any]


def _public(stored: rules_store.StoredRule) -> RulePublic:
    definition = {**stored.definition, "enabled": stored.enabled}
    return RulePublic.model_validate(asdict(stored) | {"definition": definition})


def _get(conn: psycopg.Connection[Any], rule_id: str) -> RulePublic:
    stored = rules_store.find_rule(conn, rule_id)
    if stored is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id!r}")
    return _public(stored)


def _save(conn: psycopg.Connection[Any], rule: Rule) -> RulePublic:
    return _public(rules_store.save_rule(conn, rule, "api"))


@router.get("")
def list_rules(
    conn: ConnDep, principal: Authorized, type: str | None = None, enabled: bool | None = None
) -> list[RulePublic]:
    """Every rule (of your communities, and those for all), by id."""
    stored = rules_store.list_rules(conn, principal.communities, rule_type=type, enabled=enabled)
    return [_public(row) for row in stored]


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
        raise body_error("id", f"id {rule.id!r} does not match the path's {rule_id!r}")
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
    if not rules_store.delete_rule(conn, rule_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no rule {rule_id!r}")


# -- webhooks ---------------------------------------------------------------------------


class WebhookCreate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: AnyHttpUrl
    secret: Annotated[str | None, Field(min_length=16, max_length=200)] = Field(
        default=None, description="HMAC key; generated (and shown once) when omitted"
    )
    community_id: TextId | None = None
    min_severity: Severity = Severity.WARNING


class WebhookPublic(Public):
    id: int
    url: str
    community_id: str | None
    min_severity: Severity
    enabled: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="Shown once: verify X-SC-Signature with it")


class DeliveryPublic(Public):
    id: int
    webhook_id: int
    alert_id: int
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


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
        raise body_error(
            "url", f"{reason}: webhooks go to public destinations only", "private_destination"
        )
    secret = body.secret or secrets.token_urlsafe(32)
    created = webhooks_store.create_webhook(
        conn,
        url=str(body.url),
        secret=secret,
        community_id=body.community_id,
        min_severity=body.min_severity.value,
    )
    return WebhookCreated(**asdict(created), secret=secret)


@webhooks_router.get("")
def list_webhooks(conn: ConnDep, principal: Authorized) -> list[WebhookPublic]:
    # Global webhooks (and their deliveries) carry every community's alerts to a URL
    # that may hold a secret: for administrators of every community only.
    hooks = webhooks_store.list_webhooks(conn, principal.communities)
    return [WebhookPublic.model_validate(h, from_attributes=True) for h in hooks]


@webhooks_router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(conn: ConnDep, webhook_id: WebhookId) -> None:
    if not webhooks_store.delete_webhook(conn, webhook_id):
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
    found = webhooks_store.list_deliveries(
        conn, principal.communities, state=state, webhook_id=webhook_id
    )
    return [DeliveryPublic.model_validate(d, from_attributes=True) for d in found]


@webhooks_router.post("/deliveries/{delivery_id}/retry")
def retry_delivery(conn: ConnDep, delivery_id: DeliveryId) -> DeliveryPublic:
    """Send a dead letter again (attempts start over)."""
    row = webhooks_store.retry_delivery(conn, delivery_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no dead delivery {delivery_id}")
    return DeliveryPublic.model_validate(row, from_attributes=True)
