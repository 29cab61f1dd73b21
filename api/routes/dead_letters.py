"""``/api/v1/dead-letters``: messages the pipeline refused, newest first."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from psycopg import sql
from pydantic import AwareDatetime

from api.cursors import AfterQuery, LimitQuery, decode_position, encode_position
from api.deps import ConnDep, SettingsDep, page_size
from api.schemas import DeadLetterPublic, DeadLettersPublic
from api.scope import Authorized, community_clause

__all__ = ["router"]

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])

# (received_at, id) descending: received_at is indexed; id breaks ties within a batch.
# The device is the topic's fourth level (indexed as such). A payload_size means the
# payload was kept truncated; the newest replay says what came of replaying it.
_LIST = sql.SQL(
    "SELECT d.id, d.received_at, d.topic, d.payload, d.reason, d.detail, d.worker,"
    " d.payload_size, r.replayed_at, r.outcome, r.reason"
    " FROM dead_letters AS d"
    " LEFT JOIN LATERAL (SELECT replayed_at, outcome, reason FROM dead_letter_replays"
    "  WHERE dead_letter_id = d.id ORDER BY replayed_at DESC, id DESC LIMIT 1) AS r ON true"
    " WHERE true{} ORDER BY d.received_at DESC, d.id DESC LIMIT %s"
)


def _public(
    id_: int,
    received_at: datetime,
    topic: str,
    payload: bytes,
    reason: str,
    detail: str,
    worker: str,
    payload_size: int | None,
    replayed_at: datetime | None,
    replay_outcome: str | None,
    replay_reason: str | None,
) -> DeadLetterPublic:
    encoding: Literal["utf-8", "base64"]
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    return DeadLetterPublic(
        id=id_,
        received_at=received_at,
        topic=topic,
        reason=reason,
        detail=detail,
        worker=worker,
        payload=text,
        payload_encoding=encoding,
        payload_size=len(payload) if payload_size is None else payload_size,
        truncated=payload_size is not None,
        replayed_at=replayed_at,
        replay_outcome=replay_outcome,
        replay_reason=replay_reason,
    )


@router.get("")
def list_dead_letters(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    reason: Annotated[str | None, Query(description="e.g. bad_json, unknown_device")] = None,
    device: Annotated[str | None, Query(description="the device id in the topic")] = None,
    since: Annotated[AwareDatetime | None, Query(description="received at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="received before")] = None,
    limit: LimitQuery = None,
    after: AfterQuery = None,
) -> DeadLettersPublic:
    """Refused messages with their topic, reason and raw payload (text, or base64 if
    binary; truncated past the payload limit, with its real size), newest first."""
    size = page_size(settings, limit)
    # The community is the topic's second level; a topic without one is nobody's but
    # the administrators' of every community.
    scope, params = community_clause(principal, "split_part(d.topic, '/', 2)")
    terms: list[sql.Composable] = [sql.SQL(" AND " + scope)]
    if reason is not None:
        terms.append(sql.SQL(" AND d.reason = %s"))
        params.append(reason)
    if device is not None:
        terms.append(sql.SQL(" AND split_part(d.topic, '/', 4) = %s"))
        params.append(device)
    if since is not None:
        terms.append(sql.SQL(" AND d.received_at >= %s"))
        params.append(since)
    if until is not None:
        terms.append(sql.SQL(" AND d.received_at < %s"))
        params.append(until)
    if after is not None:
        received_at, last_id = decode_position(after, int)
        terms.append(sql.SQL(" AND (d.received_at, d.id) < (%s, %s)"))
        params += [received_at, last_id]
    rows = conn.execute(_LIST.format(sql.Composed(terms)), [*params, size + 1]).fetchall()
    data = [_public(*row) for row in rows[:size]]
    more = len(rows) > size
    cursor = encode_position(data[-1].received_at, data[-1].id) if more else None
    return DeadLettersPublic(data=data, next_cursor=cursor)
