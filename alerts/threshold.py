"""Threshold rules: a `for` duration, separate raise and clear levels, consecutive counts.

Alarm-management practice (ISA-18.2, EEMUA 191) against noisy sensors: the
on-delay is ``for`` (time) and ``min_breaches`` (readings); the off-delay is
``off_delay`` (time) and ``min_clears`` (readings). A breach during the off-delay
keeps the one alert open and counts an occurrence. With ``chatter``, an alert
that opens and clears ``transitions`` times within ``window`` is marked
chattering and held open until the value has stayed clear for ``hold``; its
entry outlives a clear for the length of the window so transitions are counted.

The batch is filtered with numpy first: only devices with a breaching reading
or a subject already pending/firing are stepped one reading at a time. A
normal reading of an idle device costs one vectorised comparison.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alerts.evaluator import Context, Evaluator, in_schedule
from alerts.model import DeviceInfo, ReadingColumns, device_subject
from alerts.state import JsonFields, RuleState
from core.rules import ThresholdRule

__all__ = ["ThresholdEntry", "ThresholdEvaluator"]

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(slots=True)
class ThresholdEntry(JsonFields):
    device_id: str
    firing: bool = False
    since: float = 0.0  # first reading of the current breach
    breaches: int = 0  # consecutive breaching readings
    clears: int = 0  # consecutive clearing readings while firing
    last_ts: float = float("-inf")
    last_breach: bool = False
    value: float = 0.0
    clearing: bool = False  # firing, and back in range since clear_since
    clear_since: float = 0.0
    flips: list[float] = field(default_factory=list)  # recent transitions (chatter)
    chattering: bool = False


class ThresholdEvaluator(Evaluator):
    rule: ThresholdRule

    def __init__(self, rule: ThresholdRule) -> None:
        super().__init__(rule)
        self._op = _OPS[rule.op]
        self._raise = rule.raise_
        self._clear = rule.clear_level

    def metrics(self) -> tuple[str, ...]:
        return (self.rule.metric,)

    def entry_from_json(self, data: Mapping[str, Any]) -> ThresholdEntry:
        return ThresholdEntry(**data)

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        entry = rs.get(subject)
        if entry is None or not entry.firing:
            device_id = subject.removeprefix("device:")
            rs.load(subject, ThresholdEntry(device_id, firing=True, since=since, last_ts=since))

    # -- readings ------------------------------------------------------------

    def on_readings(
        self, metric: str, group: ReadingColumns, rs: RuleState[ThresholdEntry], ctx: Context
    ) -> None:
        breach = self._op(group.value_array(), self._raise)
        hits = np.flatnonzero(breach)
        if not len(hits) and not rs.entries:
            return  # the common case: nothing breaches, nothing pending
        ids = group.device_ids
        candidates = {ids[i] for i in hits}
        if rs.entries:
            present = group.devices()
            candidates.update(e.device_id for e in rs.entries.values() if e.device_id in present)
        if not candidates:
            return
        rows = group.rows_of(candidates)
        ts, values = group.ts, group.values
        directory = ctx.directory
        for device_id in candidates:
            info = directory.get(device_id)
            if info is None or not self.applies(info):
                continue
            subject = device_subject(device_id)
            for i in sorted(rows[device_id], key=ts.__getitem__):
                self._step(ctx, rs, subject, info, ts[i], values[i])

    def _step(
        self,
        ctx: Context,
        rs: RuleState[ThresholdEntry],
        subject: str,
        info: DeviceInfo,
        ts: float,
        value: float,
    ) -> None:
        rule = self.rule
        entry = rs.get(subject)
        if entry is not None and ts <= entry.last_ts:
            return  # late or repeated reading: timers never run backwards
        scheduled = in_schedule(rule.schedule, ts, info.time_zone)
        breach = scheduled and bool(self._op(value, self._raise))
        if entry is None:
            if not breach:
                return
            entry = ThresholdEntry(info.device_id)
        entry.last_ts, entry.last_breach, entry.value = ts, breach, value
        if entry.firing:
            if scheduled and self._op(value, self._clear):
                if entry.clears or entry.clearing:  # still past the clear level: hysteresis holds
                    entry.clears = 0
                    if entry.clearing and breach:  # back past raise in the off-delay: one more
                        entry.clearing = False
                        self._flip(ctx, info, entry, ts, occurrence=True)
                    entry.clearing = False
                    rs.touch(subject)
                return
            if not entry.clearing:
                entry.clearing, entry.clear_since = True, ts
                self._flip(ctx, info, entry, ts, occurrence=False)
            entry.clears += 1
            if not scheduled or self._cleared(entry, ts):
                self._end(ctx, rs, subject, info, entry, ts, {"value": value})
            else:
                rs.touch(subject)
            return
        if not breach:
            if self._remembers(entry, ts):
                entry.breaches = 0
                rs.touch(subject)
            else:
                rs.drop(subject)  # the breach ended before it counted
            return
        if entry.breaches == 0:
            entry.since = ts
        entry.breaches += 1
        rs.put(subject, entry)
        self._maybe_fire(ctx, info, entry, ts)

    def _off_delay(self, entry: ThresholdEntry) -> float:
        chatter = self.rule.chatter
        if entry.chattering and chatter is not None:
            return max(self.rule.off_delay, chatter.hold)
        return self.rule.off_delay

    def _cleared(self, entry: ThresholdEntry, now: float) -> bool:
        return (
            entry.clearing
            and entry.clears >= self.rule.min_clears
            and now - entry.clear_since >= self._off_delay(entry)
        )

    def _remembers(self, entry: ThresholdEntry, now: float) -> bool:
        """An idle entry is kept while its transitions may still make it chattering."""
        chatter = self.rule.chatter
        if chatter is None:
            return False
        entry.flips = [t for t in entry.flips if now - t < chatter.window]
        return bool(entry.flips)

    def _flip(
        self, ctx: Context, info: DeviceInfo, entry: ThresholdEntry, ts: float, *, occurrence: bool
    ) -> None:
        """A transition of the condition: count it; mark chattering; say an occurrence."""
        chatter = self.rule.chatter
        became = False
        if chatter is not None:
            entry.flips = [t for t in entry.flips if ts - t < chatter.window] + [ts]
            if not entry.chattering and len(entry.flips) >= chatter.transitions:
                entry.chattering = became = True
        if occurrence or became:
            details: dict[str, Any] = {"metric": self.rule.metric, "value": entry.value}
            if entry.chattering:
                details["chattering"] = True
            self.raise_(ctx, info, ts, details=details)

    def _end(
        self,
        ctx: Context,
        rs: RuleState[ThresholdEntry],
        subject: str,
        info: DeviceInfo,
        entry: ThresholdEntry,
        at: float,
        details: dict[str, Any],
    ) -> None:
        self.clear(ctx, info, at, details=details)
        entry.firing = entry.clearing = entry.chattering = False
        entry.breaches = entry.clears = 0
        if self._remembers(entry, at):
            rs.touch(subject)
        else:
            rs.drop(subject)

    def _maybe_fire(
        self, ctx: Context, info: DeviceInfo, entry: ThresholdEntry, now: float
    ) -> bool:
        """Raise once the breach has lasted and counted enough; whether it did (the
        entry changed)."""
        rule = self.rule
        if entry.breaches < rule.min_breaches or now - entry.since < rule.for_:
            return False
        entry.firing = True
        entry.clears = 0
        entry.clearing = False
        at = max(entry.last_ts, entry.since + rule.for_)
        chatter = rule.chatter
        if chatter is not None:
            entry.flips = [t for t in entry.flips if at - t < chatter.window] + [at]
            entry.chattering = len(entry.flips) >= chatter.transitions
        details: dict[str, Any] = {
            "metric": rule.metric,
            "value": entry.value,
            "op": rule.op,
            "raise": rule.raise_,
            "since": entry.since,
            "breaches": entry.breaches,
        }
        if entry.chattering:
            details["chattering"] = True
        self.raise_(ctx, info, at, details=details)
        return True

    # -- time ------------------------------------------------------------------

    def tick(self, rs: RuleState[ThresholdEntry], ctx: Context) -> None:
        """Fire `for` timers that ran out with no newer reading; end schedule windows."""
        rule = self.rule
        for subject in rs:
            entry = rs.entries[subject]
            info = ctx.directory.get(entry.device_id)
            if info is None:
                continue
            if rule.schedule is not None and not in_schedule(
                rule.schedule, ctx.now, info.time_zone
            ):
                rs.drop(subject)
                if entry.firing:
                    self.clear(ctx, info, ctx.now, details={"reason": "schedule window ended"})
                continue
            if entry.firing:
                # The off-delay ran out with no new reading; not while intake is behind,
                # when the next reading, still queued, may be a breach.
                if ctx.silence_counts and self._cleared(entry, ctx.now):
                    self._end(ctx, rs, subject, info, entry, ctx.now, {"value": entry.value})
            elif entry.last_breach:
                if self._maybe_fire(ctx, info, entry, ctx.now):
                    rs.touch(subject)
            elif not self._remembers(entry, ctx.now):
                rs.drop(subject)
