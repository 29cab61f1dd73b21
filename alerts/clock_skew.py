"""Clock-skew rules: a device whose clock runs ahead of ours by more than ``max_ahead``.

Only a clock *ahead* is judged: a device time behind receipt is also what queued
or buffered data looks like (a backlog after an outage, a device replaying its
history), so it says nothing certain about the clock. Freshness is already safe
from a fast clock (``core.clock``); this rule tells someone to fix it, once per
device, and clears by itself when the device's messages are back within the
clock tolerance (a clock does not drift back by chance: it was fixed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alerts.evaluator import Context, Evaluator
from alerts.model import device_subject
from alerts.state import JsonFields, RuleState
from core.clock import CLOCK_TOLERANCE_S
from core.rules import ClockSkewRule

__all__ = ["ClockSkewEntry", "ClockSkewEvaluator"]


@dataclass(slots=True)
class ClockSkewEntry(JsonFields):
    device_id: str
    ahead_s: float  # the worst offset seen while open


class ClockSkewEvaluator(Evaluator):
    rule: ClockSkewRule

    def entry_from_json(self, data: Mapping[str, Any]) -> ClockSkewEntry:
        return ClockSkewEntry(**data)

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        if rs.get(subject) is None:
            rs.load(subject, ClockSkewEntry(subject.removeprefix("device:"), 0.0))

    def on_ahead(
        self, rs: RuleState[ClockSkewEntry], ahead: dict[str, float], ctx: Context
    ) -> None:
        limit = self.rule.max_ahead
        for device_id, offset in ahead.items():
            subject = device_subject(device_id)
            entry = rs.get(subject)
            if entry is None:
                if offset <= limit:
                    continue
                info = ctx.directory.get(device_id)
                if info is None or not self.applies(info):
                    continue
                rs.put(subject, ClockSkewEntry(device_id, offset))
                self.raise_(ctx, info, ctx.now, details={"ahead_s": round(offset, 3)})
                continue
            if offset > CLOCK_TOLERANCE_S:
                if offset > entry.ahead_s:
                    entry.ahead_s = offset
                    rs.touch(subject)
                continue
            rs.drop(subject)
            info = ctx.directory.get(device_id)
            if info is not None:
                self.clear(ctx, info, ctx.now, details={"ahead_s": round(offset, 3)})
