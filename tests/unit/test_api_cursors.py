"""Opaque pagination cursors: round trip, and tampering is a 422, never a 500."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi import HTTPException

from api.cursors import decode_position, encode_position

TS = datetime(2026, 11, 29, 1, 2, 3, 456789, tzinfo=UTC)


def test_round_trip_keeps_microseconds_and_offset() -> None:
    shanghai = TS.astimezone(timezone(timedelta(hours=8)))
    assert decode_position(encode_position(shanghai, "heart_rate"), str) == (TS, "heart_rate")
    assert decode_position(encode_position(TS, 2**62), int) == (TS, 2**62)


def test_cursor_is_url_safe() -> None:
    cursor = encode_position(TS, "a/b+c?=")
    assert cursor.isascii()
    assert not set(cursor) & set("+/=?&")


def _forge(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("cursor", "key_type"),
    [
        ("%%%", str),
        (_forge("not json"), str),
        (_forge('{"a": 1}'), str),
        (_forge('["2026-01-01T00:00:00", "m"]'), str),  # naive
        (_forge('["2026-01-01T00:00:00Z", 5]'), str),  # wrong key type
        (_forge('["2026-01-01T00:00:00Z", "5"]'), int),
        (_forge('["2026-01-01T00:00:00Z", true]'), int),
        (_forge(f'["2026-01-01T00:00:00Z", {2**63}]'), int),  # wider than bigint
        (_forge('["2026-01-01T00:00:00Z", "m", "extra"]'), str),
    ],
)
def test_tampered_cursor_is_422(cursor: str, key_type: type[str] | type[int]) -> None:
    decode = (
        (lambda: decode_position(cursor, int))
        if key_type is int
        else (lambda: decode_position(cursor, str))
    )
    with pytest.raises(HTTPException) as caught:
        decode()
    assert caught.value.status_code == 422
