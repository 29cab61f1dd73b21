"""``/api/v1/dead-letters``: messages the pipeline refused, newest first."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from api.cursors import AfterQuery, LimitQuery, decode_position, encode_position, filters_of, page
from api.deps import ConnDep, SettingsDep, page_size
from api.schemas import DeadLetterPublic, DeadLettersPublic
from api.scope import Authorized
from store import dead_letters as dead_letters_store
from store.dead_letters import DeadLetterRecord

__all__ = ["router"]

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


def _public(letter: DeadLetterRecord) -> DeadLetterPublic:
    encoding: Literal["utf-8", "base64"]
    try:
        text, encoding = letter.payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(letter.payload).decode("ascii"), "base64"
    received = {
        "payload": text,
        "payload_encoding": encoding,
        "payload_size": letter.size,
        "truncated": letter.truncated,
    }
    return DeadLetterPublic.model_validate(asdict(letter) | received)


@dataclass(frozen=True, slots=True)
class _DeadLetterQuery:
    """The list's filters and page (a dependency: FastAPI reads the fields from the query)."""

    reason: Annotated[str | None, Query(description="e.g. bad_json, unknown_device")] = None
    device: Annotated[str | None, Query(description="the device id in the topic")] = None
    since: Annotated[AwareDatetime | None, Query(description="received at or after")] = None
    until: Annotated[AwareDatetime | None, Query(description="received before")] = None
    limit: LimitQuery = None
    after: AfterQuery = None


@router.get("")
def list_dead_letters(
    conn: ConnDep,
    settings: SettingsDep,
    principal: Authorized,
    query: Annotated[_DeadLetterQuery, Depends()],
) -> DeadLettersPublic:
    """Refused messages with their topic, reason and raw payload (text, or base64 if
    binary; truncated past the payload limit, with its real size), newest first."""
    size = page_size(settings, query.limit)
    before = decode_position(query.after, int) if query.after is not None else None
    rows = dead_letters_store.list_dead_letters(
        conn, principal.communities, limit=size + 1, before=before, **filters_of(query)
    )
    data, cursor = page(rows, size, _public, lambda d: encode_position(d.received_at, d.id))
    return DeadLettersPublic(data=data, next_cursor=cursor)
