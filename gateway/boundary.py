"""The per-message boundary: whatever one message makes our code raise, it ends
as a dead letter and the batch goes on.

``RejectedMessage`` is the expected way out and carries its reason;
``ServiceUnavailable`` is an outage and is not the message's fault, so it passes
through (the caller retries the batch). Anything else is a bug that this message
triggers: the message becomes an ``internal_error`` dead letter with the
exception's class and text, and the log says so at a rate that a flood of such
messages cannot turn into a flood of log lines.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from core.errors import RejectReason
from core.limits import MAX_DETAIL_CHARS
from ingest.batch import DeadLetter

__all__ = ["RateLimitedLog", "dead_letter", "internal_error", "truncate_payload"]

_LOG = logging.getLogger(__name__)
# At most one logged internal error per interval; the others are counted and
# their number said with the next one.
LOG_EVERY_S = 10.0
# How much of a payload a log line quotes.
LOG_PAYLOAD_BYTES = 200


class RateLimitedLog:
    """Logs the first event and then at most one per ``every_s``, with a count of the rest."""

    def __init__(self, logger: logging.Logger, *, every_s: float = LOG_EVERY_S) -> None:
        self.logger = logger
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._suppressed = 0

    def error(self, msg: str, *args: object, exc_info: BaseException | None = None) -> bool:
        """Log unless one was logged within ``every_s``; True when it was logged."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.every_s:
                self._suppressed += 1
                return False
            self._last, suppressed, self._suppressed = now, self._suppressed, 0
        if suppressed:
            self.logger.error("%d more like the next were not logged", suppressed)
        self.logger.error(msg, *args, exc_info=exc_info)
        return True


_INTERNAL_LOG = RateLimitedLog(_LOG)


def truncate_payload(payload: bytes, limit: int) -> bytes:
    """What a dead letter keeps of a payload; its full size is stored beside it."""
    return payload if len(payload) <= limit else payload[:limit]


def dead_letter(
    topic: str, payload: bytes, reason: str, detail: str, received_at: datetime
) -> DeadLetter:
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 1] + "…"
    return DeadLetter(topic, payload, reason, detail, received_at)


def internal_error(
    topic: str, payload: bytes, received_at: datetime, exc: Exception, stage: str
) -> DeadLetter:
    """The dead letter for a message that made ``stage`` raise ``exc``; logged, rate limited."""
    text = f"{stage}: {type(exc).__name__}: {exc}"
    _INTERNAL_LOG.error(
        "message on %r made %s raise %s; it is a dead letter (payload starts %r)",
        topic[:200],
        stage,
        type(exc).__name__,
        payload[:LOG_PAYLOAD_BYTES],
        exc_info=exc,
    )
    return dead_letter(topic, payload, RejectReason.INTERNAL_ERROR.value, text, received_at)
