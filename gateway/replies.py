"""Answers to Alink devices, after the commit: ``…/post_reply`` with 200 or the refusal.

The pipeline calls this with each settled batch (``Pipeline(on_settled=...)``),
after the commit and the broker's acknowledgement, so a 200 means stored. A
message that became a dead letter gets Alink's error form: a code (460 for a
payload the platform refuses, 403 for a device it does not know, 500 for its
own failure) and ``reason: detail`` as the message. A duplicate is answered
200: what it carried is stored. A post that asks for no answer
(``"sys": {"ack": 0}``) gets none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import orjson

from core.alink import (
    is_alink,
    parse_alink_topic,
    reply_payload,
    reply_topic,
    request_id,
    wants_reply,
)
from core.errors import RejectedMessage, RejectReason
from core.observability import PipelineCounters
from gateway.bridge import InboundMessage
from ingest.batch import DeadLetter

__all__ = ["AlinkReplies"]


def _reason(value: str) -> RejectReason:
    try:
        return RejectReason(value)
    except ValueError:
        return RejectReason.INTERNAL_ERROR


def _asks_for_reply(payload: bytes) -> bool:
    try:
        return wants_reply(orjson.loads(payload))
    except orjson.JSONDecodeError:
        return True  # a refused payload is answered: the device learns why


class AlinkReplies:
    """``publish(topic, payload)`` sends one answer; counts what it sent and could not."""

    def __init__(
        self, publish: Callable[[str, bytes], bool], counters: PipelineCounters | None = None
    ) -> None:
        self._publish = publish
        self._counters = counters
        self.sent = 0
        self.unsent = 0

    def __call__(self, messages: Sequence[InboundMessage], dead: Sequence[DeadLetter]) -> None:
        refused = {(d.topic, d.payload): d for d in dead if is_alink(d.topic)}
        for message in messages:
            if not is_alink(message.topic):
                continue
            try:
                topic = parse_alink_topic(message.topic)
            except RejectedMessage:
                continue  # no address of a device to answer
            letter = refused.get((message.topic, message.payload))
            if letter is None:
                if not _asks_for_reply(message.payload):
                    continue
                body = reply_payload(topic, request_id(message.payload), None)
            else:
                body = reply_payload(
                    topic, request_id(message.payload), _reason(letter.reason), letter.detail
                )
            if self._publish(reply_topic(message.topic), body):
                self.sent += 1
                if self._counters is not None:
                    self._counters.add("alink_replies_total")
            else:
                self.unsent += 1
                if self._counters is not None:
                    self._counters.add("alink_replies_unsent_total")
