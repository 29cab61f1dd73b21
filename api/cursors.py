"""Opaque keyset-pagination cursors for time-ordered lists, and pages of lists ordered
by id.

A cursor is the position of the last row a page returned, ``(timestamp, tie-breaker)``,
as base64url of a small JSON array. Clients must treat it as opaque; it stays valid
however many rows are added, because the next page starts strictly after it. A list
ordered by id (devices, users) pages by the last id instead (``id_page``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel

from api.problems import unprocessable

__all__ = [
    "AfterQuery",
    "LimitQuery",
    "decode_position",
    "encode_position",
    "filters_of",
    "id_page",
    "invalid_cursor",
    "model_page",
    "page",
]

AfterQuery = Annotated[
    str | None,
    Query(description="next_cursor of the previous page; omit for the first page", max_length=512),
]
LimitQuery = Annotated[
    int | None,
    Query(ge=1, description="Page size; capped at the server's max_page_size"),
]


def encode_position(ts: datetime, key: str | int) -> str:
    raw = json.dumps([ts.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def invalid_cursor() -> HTTPException:
    return unprocessable(
        ("query", "after"),
        "invalid cursor: pass next_cursor from the previous page unchanged",
        "invalid_cursor",
    )


K = TypeVar("K", str, int)
# Keys go back into bigint columns: anything wider would be a database error, not a 422.
_BIGINT = 2**63 - 1


def decode_position(cursor: str, key_type: type[K]) -> tuple[datetime, K]:
    """Inverse of ``encode_position``; any tampering is a 422, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_text, key = json.loads(raw)
        ts = datetime.fromisoformat(ts_text)
    except (binascii.Error, ValueError, TypeError):
        raise invalid_cursor() from None
    if ts.tzinfo is None or type(key) is not key_type:
        raise invalid_cursor()
    if isinstance(key, int) and not -_BIGINT <= key <= _BIGINT:
        raise invalid_cursor()
    return ts, key


class _Identified(Protocol):
    @property
    def id(self) -> str | int: ...


R = TypeVar("R")
P = TypeVar("P", bound=_Identified)


def id_page(rows: Sequence[R], size: int, public: Callable[[R], P]) -> tuple[list[P], str | None]:
    """The first ``size`` of ``rows`` (the caller fetched ``size + 1`` to know whether
    there are more) as public models, and the next page's cursor: the last id, or None."""
    data = [public(row) for row in rows[:size]]
    return data, str(data[-1].id) if len(rows) > size else None


T = TypeVar("T")


def page(
    rows: Sequence[R], size: int, public: Callable[[R], T], position: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """As ``id_page``, for pages ordered by another key: ``position`` encodes the last
    row's place (``encode_position``) as the next page's cursor."""
    data = [public(row) for row in rows[:size]]
    return data, position(data[-1]) if len(rows) > size else None


M = TypeVar("M", bound=BaseModel)


def model_page(
    rows: Sequence[R], size: int, model: type[M], position: Callable[[M], str]
) -> tuple[list[M], str | None]:
    """``page`` with each row (a record) read into the response ``model``."""
    return page(rows, size, lambda row: model.model_validate(row, from_attributes=True), position)


def filters_of(query: Any) -> dict[str, Any]:
    """A list route's query (a dataclass dependency ending in ``limit`` and ``after``)
    without its page: the filters, by name."""
    return {name: value for name, value in asdict(query).items() if name not in _PAGE}


_PAGE = ("limit", "after")
