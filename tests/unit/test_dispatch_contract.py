"""The responder's MQTT contract: reply parsing (fuzzed) and the broker's grants."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.broker_acl import BrokerResponder, render_acl_file, render_password_file
from core.dispatch_contract import BadReply, dispatch_topic, parse_reply, reply_topic


def test_a_reply_is_parsed_from_its_topic_and_payload() -> None:
    reply = parse_reply(reply_topic("c1", "fs-a"), b'{"dispatch_id": 7, "action": "accept"}')
    assert (reply.community_id, reply.responder_id, reply.dispatch_id, reply.action) == (
        "c1",
        "fs-a",
        7,
        "accept",
    )


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("community/c1/dispatch/fs-a", b'{"dispatch_id": 7, "action": "accept"}'),
        ("community/c1/dispatch-reply/fs a", b'{"dispatch_id": 7, "action": "accept"}'),
        ("community/c1/dispatch-reply/fs-a", b'{"dispatch_id": "7", "action": "accept"}'),
        ("community/c1/dispatch-reply/fs-a", b'{"dispatch_id": 7, "action": "go home"}'),
        ("community/c1/dispatch-reply/fs-a", b'{"dispatch_id": 7}'),
        ("community/c1/dispatch-reply/fs-a", b'{"dispatch_id": 7, "action": "arrive", "x": 1}'),
        ("community/c1/dispatch-reply/fs-a", b"\xff\xfe"),
        ("community/c1/dispatch-reply/fs-a", b"[]"),
        ("community/c1/dispatch-reply/fs-a", b" " * 2000),
    ],
)
def test_bad_replies_are_refused_with_a_reason(topic: str, payload: bytes) -> None:
    with pytest.raises(BadReply):
        parse_reply(topic, payload)


@given(topic=st.text(max_size=80), payload=st.binary(max_size=300))
def test_any_input_parses_or_is_refused(topic: str, payload: bytes) -> None:
    """Never anything but a Reply or BadReply (no other exception escapes)."""
    try:
        reply = parse_reply(topic, payload)
    except BadReply:
        return
    assert reply_topic(reply.community_id, reply.responder_id) == topic


@given(dispatch_id=st.integers(1, 2**63 - 1), action=st.sampled_from(["accept", "arrive"]))
def test_valid_replies_round_trip(dispatch_id: int, action: str) -> None:
    body = json.dumps({"dispatch_id": dispatch_id, "action": action}).encode()
    assert parse_reply(reply_topic("c", "r"), body).dispatch_id == dispatch_id


def test_a_responder_reads_only_their_dispatches_and_writes_only_their_replies() -> None:
    r = BrokerResponder("app-fs-a", "c1", "fs-a", "$7$1$a$b")
    acl = render_acl_file([], [], generated_at=datetime(2026, 12, 1, tzinfo=UTC), responders=[r])
    assert (
        f"user app-fs-a\ntopic read {dispatch_topic('c1', 'fs-a')}\n"
        f"topic write {reply_topic('c1', 'fs-a')}\n" in acl
    )
    assert render_password_file([], [], [r]) == "app-fs-a:$7$1$a$b\n"
