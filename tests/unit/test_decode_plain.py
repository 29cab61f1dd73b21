"""The plain-envelope reader takes only what the model takes, with the same values.

``core.decode._plain_envelope`` reads ordinary telemetry with orjson and leaves
everything else to ``TelemetryEnvelope``. Differential: for any payload it accepts,
the model accepts it too and gives the same time, seq and metrics (types included).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.decode import _plain_envelope
from core.models import TelemetryEnvelope

_NAMES = st.one_of(
    st.sampled_from(["heart_rate", "spo2", "battery", "rssi", "a", "x_1"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,50}", fullmatch=True),
    st.text(max_size=8),
)
_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
_VALUES = st.one_of(_NUMBERS, st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2))


@st.composite
def _times(draw: st.DrawFn) -> Any:
    # hypothesis takes naive bounds; the zone is drawn below.
    earliest, latest = datetime(1, 1, 1), datetime(9999, 12, 31)  # noqa: DTZ001
    moment = draw(st.datetimes(min_value=earliest, max_value=latest))
    zone = draw(
        st.sampled_from(
            [None, UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5, minutes=30))]
        )
    )
    text = moment.replace(tzinfo=zone).isoformat(
        timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
    )
    if zone is UTC and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    return draw(
        st.one_of(
            st.just(text),
            st.just(text.replace("T", " ")),
            st.integers(min_value=-5, max_value=2**64),
            st.floats(),
            st.text(max_size=12),
            st.none(),
        )
    )


@st.composite
def _ordinary(draw: st.DrawFn) -> bytes:
    """Near what devices send: the time, seq and metrics vary at their edges."""
    earliest, latest = datetime(1999, 12, 30), datetime(9999, 12, 31)  # noqa: DTZ001
    moment = draw(st.datetimes(min_value=earliest, max_value=latest))
    offset = timedelta(minutes=draw(st.integers(-23 * 60 - 59, 23 * 60 + 59)))
    text = moment.replace(tzinfo=timezone(offset)).isoformat(
        timespec=draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
    )
    if offset == timedelta(0) and draw(st.booleans()):
        text = text.replace("+00:00", "Z")
    doc: dict[str, Any] = {
        "ts": draw(st.one_of(st.just(text), st.integers(min_value=0, max_value=2**63)))
    }
    if draw(st.booleans()):
        doc["seq"] = draw(st.integers(min_value=0, max_value=2**63))
    names = st.from_regex(r"[a-z][a-z0-9_]{0,48}", fullmatch=True)
    doc["metrics"] = draw(st.dictionaries(names, _NUMBERS, min_size=1, max_size=66))
    return json_bytes(doc)


def json_bytes(doc: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc)
    except TypeError:  # integers past 64 bits: written by the standard encoder
        import json

        return json.dumps(doc).encode()


@st.composite
def _envelopes(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 2)):
        return draw(_ordinary())
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["ts"] = draw(_times())
    if draw(st.booleans()):
        doc["seq"] = draw(st.one_of(st.integers(min_value=-3, max_value=2**64), _VALUES))
    if draw(st.integers(0, 9)):
        doc["metrics"] = draw(
            st.one_of(
                st.dictionaries(_NAMES, _NUMBERS, min_size=0, max_size=70),
                st.dictionaries(_NAMES, _VALUES, max_size=3),
                _VALUES,
            )
        )
    if not draw(st.integers(0, 9)):
        doc[draw(_NAMES)] = draw(_VALUES)
    return json_bytes(doc)


def _model(payload: bytes) -> TelemetryEnvelope | None:
    try:
        return TelemetryEnvelope.model_validate_json(payload)
    except ValidationError:
        return None


def _agrees(payload: bytes) -> None:
    plain = _plain_envelope(payload)
    if plain is None:
        return
    model = _model(payload)
    assert model is not None, f"taken without the model, which refuses it: {payload!r}"
    ts, seq, metrics = plain
    assert ts == model.ts
    if isinstance(ts, datetime):
        assert isinstance(model.ts, datetime)
        assert ts.utcoffset() == model.ts.utcoffset()
    else:
        assert type(ts) is type(model.ts)
    assert seq == model.seq
    assert list(metrics.items()) == list(model.metrics.items())
    assert [type(v) for v in metrics.values()] == [type(v) for v in model.metrics.values()]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_envelopes())
def test_plain_envelopes_are_the_models(payload: bytes) -> None:
    _agrees(payload)


def test_edges_go_to_the_model_or_agree() -> None:
    edges = [
        b'{"ts":1700000000000,"metrics":{"a":1,"a":2},"ts":1700000000001}',  # repeated keys
        b'{"ts":"2026-12-04T10:00:00-00:00","metrics":{"a":1}}',
        b'{"ts":"2026-02-30T10:00:00Z","metrics":{"a":1}}',  # no such day
        b'{"ts":"2026-12-04T24:00:00Z","metrics":{"a":1}}',
        b'{"ts":"2026-12-04T10:00:00+24:00","metrics":{"a":1}}',
        b'{"ts":"2026-12-04T10:00:00.1234567Z","metrics":{"a":1}}',
        b'{"ts":"2026-12-04T10:00:00","metrics":{"a":1}}',  # naive: refused
        b'{"ts":1,"metrics":{"a":1e999}}',
        b'{"ts":1,"metrics":{"a":NaN}}',
        b'{"ts":1,"metrics":{"a\\n":1}}',
        b'{"ts":1,"metrics":{"a":1},"seq":9223372036854775808}',
        b'{"ts":true,"metrics":{"a":1}}',
        b'{"ts":1,"metrics":{"a":1},"seq":true}',
        b'\xef\xbb\xbf{"ts":1,"metrics":{"a":1}}',
        b' {"ts":1,"metrics":{"a":1}} ',
    ]
    for payload in edges:
        _agrees(payload)


def test_ordinary_telemetry_takes_the_plain_path() -> None:
    """What devices send every minute is read without the model (else the path is dead)."""
    metrics = {"heart_rate": 72, "spo2": 97.5}
    payload = orjson.dumps({"ts": "2026-12-04T10:00:00.123+08:00", "seq": 7, "metrics": metrics})
    plain = _plain_envelope(payload)
    assert plain is not None
    ts, seq, values = plain
    assert ts == datetime(2026, 12, 4, 2, 0, 0, 123000, tzinfo=UTC)
    assert seq == 7
    assert values == metrics
    assert _plain_envelope(b'{"ts":1700000000000,"metrics":{"battery":true}}') is not None
