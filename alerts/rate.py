"""Rate-of-change rules: e.g. a heat detector rising faster than 8 degC a minute.

Each device in scope keeps the readings of the last ``window``; the rate is the
slope from the oldest of them at least ``min_span`` back. The windows are not
persisted: they are short, and the store rebuilds them from stored readings
on start (``AlertStore.recent_readings``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from alerts.evaluator import Context, Evaluator, in_schedule
from alerts.model import DeviceInfo, ReadingColumns, device_subject
from alerts.state import JsonFields, RuleState
from core.rules import RateRule

__all__ = ["RateEntry", "RateEvaluator"]


@dataclass(slots=True)
class RateEntry(JsonFields):
    device_id: str
    samples: deque[tuple[float, float]] = field(default_factory=deque)
    firing: bool = False


class RateEvaluator(Evaluator):
    rule: RateRule
    persistent: ClassVar[bool] = False

    def __init__(self, rule: RateRule) -> None:
        super().__init__(rule)
        self._sign = 1.0 if rule.direction == "rising" else -1.0

    def metrics(self) -> tuple[str, ...]:
        return (self.rule.metric,)

    def entry_from_json(self, data: Mapping[str, Any]) -> RateEntry:
        return RateEntry(
            str(data["device_id"]),
            deque((float(t), float(v)) for t, v in data["samples"]),
            bool(data["firing"]),
        )

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        rs.restored(subject, lambda: RateEntry(subject.removeprefix("device:"))).firing = True

    def add_history(
        self, rs: RuleState[RateEntry], device_id: str, ts: float, value: float
    ) -> None:
        """A stored reading from before the restart: fills the window, raises nothing."""
        subject = device_subject(device_id)
        entry = rs.restored(subject, lambda: RateEntry(device_id))
        if not entry.samples or ts > entry.samples[-1][0]:
            entry.samples.append((ts, value))

    def on_readings(
        self, metric: str, group: ReadingColumns, rs: RuleState[RateEntry], ctx: Context
    ) -> None:
        directory = ctx.directory
        ids, ts, values = group.device_ids, group.ts, group.values
        for i, device_id in enumerate(ids):
            info = directory.get(device_id)
            if info is None or not self.applies(info):
                continue
            self._step(ctx, rs, info, ts[i], values[i])

    def _step(
        self, ctx: Context, rs: RuleState[RateEntry], info: DeviceInfo, ts: float, value: float
    ) -> None:
        rule = self.rule
        subject = device_subject(info.device_id)
        entry = rs.get(subject)
        if entry is None:
            entry = RateEntry(info.device_id)
            rs.put(subject, entry)
        samples = entry.samples
        if samples and ts <= samples[-1][0]:
            return
        samples.append((ts, value))
        horizon = ts - rule.window
        while samples[0][0] < horizon:
            samples.popleft()
        rate = None
        for t0, v0 in samples:  # oldest first: the longest span in the window
            if ts - t0 < rule.min_span:
                break
            rate = self._sign * (value - v0) / (ts - t0) * 60.0
            break
        scheduled = in_schedule(rule.schedule, ts, info.time_zone)
        if not entry.firing:
            if rate is not None and scheduled and rate >= rule.per_minute:
                entry.firing = True
                self.raise_(
                    ctx,
                    info,
                    ts,
                    details={
                        "metric": rule.metric,
                        "value": value,
                        "per_minute": round(rate, 3),
                        "limit_per_minute": rule.per_minute,
                    },
                )
        elif rate is None or rate < rule.clear_rate or not scheduled:
            entry.firing = False
            self.clear(ctx, info, ts, details={"value": value})
