"""Rules on device events: event match (with an optional follow-up) and count in a window."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts.evaluator import Context, Evaluator, in_schedule, matches
from alerts.model import DeviceInfo, EventObs, device_subject
from alerts.state import JsonFields, RuleState
from core.rules import CountRule, EventRule

__all__ = ["CountEntry", "CountEvaluator", "EventEntry", "EventEvaluator"]


@dataclass(slots=True)
class EventEntry(JsonFields):
    device_id: str
    active: bool = False
    last_ts: float = float("-inf")
    # A pending follow-up: when it runs out, what the watched metric read at the event.
    deadline: float | None = None
    event_ts: float = 0.0
    baseline: float | None = None
    data: dict[str, Any] = field(default_factory=dict)


class EventEvaluator(Evaluator):
    rule: EventRule

    def events(self) -> tuple[str, ...]:
        rule = self.rule
        cancel = rule.followup.cancel_events if rule.followup else ()
        return (*rule.events, *rule.clear_events, *cancel)

    def watched(self) -> tuple[str, ...]:
        followup = self.rule.followup
        return (followup.cancel_if_rises,) if followup and followup.cancel_if_rises else ()

    def entry_from_json(self, data: Mapping[str, Any]) -> EventEntry:
        return EventEntry(**data)

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        rs.restored(subject, lambda: EventEntry(subject.removeprefix("device:"))).active = True

    def on_event(self, event: EventObs, rs: RuleState[EventEntry], ctx: Context) -> None:
        rule = self.rule
        info = event.device
        subject = device_subject(info.device_id)
        entry = rs.get(subject)
        if entry is not None and event.ts <= entry.last_ts and event.event in rule.events:
            return  # the same event delivered again
        followup = rule.followup
        if event.event in rule.events:
            if not matches(rule.where, event.data):
                return
            if not in_schedule(rule.schedule, event.ts, info.time_zone):
                return
            if entry is None:
                entry = EventEntry(info.device_id)
            entry.last_ts = event.ts
            data = {"event": event.event, **dict(event.data)}
            if followup is None:
                entry.active = True
                rs.put(subject, entry)
                self.raise_(ctx, info, event.ts, details=data)
                return
            if entry.deadline is None:
                entry.deadline = event.ts + followup.within
                entry.event_ts = event.ts
                entry.data = data
                if followup.cancel_if_rises:
                    entry.baseline = ctx.state.last_values.get(
                        (info.device_id, followup.cancel_if_rises)
                    )
            rs.put(subject, entry)
            return
        if entry is None:
            return
        if followup is not None and event.event in followup.cancel_events:
            self._cancel(ctx, rs, subject, entry, info, f"event {event.event}")
        if event.event in rule.clear_events and entry.active:
            if "alarm" in event.data and event.data["alarm"] not in rule.events:
                return  # another alarm of the device cleared, not this one
            entry.active = False
            self._settle(rs, subject, entry)
            self.clear(ctx, info, event.ts, details={"event": event.event})

    def on_watched(
        self,
        rs: RuleState[EventEntry],
        ctx: Context,
        device_id: str,
        ts: float,
        value: float,
    ) -> None:
        """A reading of the follow-up's metric from a device with a pending follow-up."""
        entry = rs.get(device_subject(device_id))
        if entry is None or entry.deadline is None or ts <= entry.event_ts:
            return
        if entry.baseline is None:
            entry.baseline = value  # first reading after the event is the reference
            rs.touch(device_subject(device_id))
            return
        if value > entry.baseline:
            info = ctx.directory.get(device_id)
            if info is not None:
                self._cancel(ctx, rs, device_subject(device_id), entry, info, "movement")

    def _cancel(
        self,
        ctx: Context,
        rs: RuleState[EventEntry],
        subject: str,
        entry: EventEntry,
        info: DeviceInfo,
        reason: str,
    ) -> None:
        followup = self.rule.followup
        if entry.deadline is None or followup is None:
            return
        entry.deadline = None
        if followup.otherwise is not None:
            entry.active = True
            self.raise_(
                ctx,
                info,
                entry.event_ts,
                severity=followup.otherwise,
                details={**entry.data, "followup": f"cancelled by {reason}"},
            )
        self._settle(rs, subject, entry)

    def _settle(self, rs: RuleState[EventEntry], subject: str, entry: EventEntry) -> None:
        if entry.active or entry.deadline is not None:
            rs.put(subject, entry)
        else:
            rs.drop(subject)

    def tick(self, rs: RuleState[EventEntry], ctx: Context) -> None:
        followup = self.rule.followup
        if followup is None:
            return
        for subject in rs:
            entry = rs.entries[subject]
            if entry.deadline is None or entry.deadline > ctx.now:
                continue
            info = ctx.directory.get(entry.device_id)
            if info is None:
                continue
            at = entry.deadline
            entry.deadline = None
            entry.active = True
            rs.put(subject, entry)
            self.raise_(
                ctx,
                info,
                at,
                details={**entry.data, "followup": f"nothing cancelled it in {followup.within:g}s"},
            )


@dataclass(slots=True)
class CountEntry(JsonFields):
    device_id: str
    times: list[float] = field(default_factory=list)
    firing: bool = False
    key: str | None = None


class CountEvaluator(Evaluator):
    rule: CountRule

    def events(self) -> tuple[str, ...]:
        return (self.rule.event,)

    def entry_from_json(self, data: Mapping[str, Any]) -> CountEntry:
        return CountEntry(**data)

    def _subject(self, device_id: str, key: str | None) -> str:
        base = device_subject(device_id)
        return base if key is None else f"{base}/{self.rule.group_by}:{key}"

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        device_id, _, rest = subject.removeprefix("device:").partition("/")
        key = rest.partition(":")[2] or None
        rs.restored(subject, lambda: CountEntry(device_id, key=key)).firing = True

    def on_event(self, event: EventObs, rs: RuleState[CountEntry], ctx: Context) -> None:
        rule = self.rule
        info = event.device
        if not matches(rule.where, event.data):
            return
        if not in_schedule(rule.schedule, event.ts, info.time_zone):
            return
        key = None
        if rule.group_by is not None:
            raw = event.data.get(rule.group_by)
            key = None if raw is None else str(raw)
        subject = self._subject(info.device_id, key)
        entry = rs.get(subject) or CountEntry(info.device_id, key=key)
        if event.ts in entry.times:
            return  # the same event delivered again
        entry.times.append(event.ts)
        entry.times.sort()
        horizon = event.ts - rule.window
        entry.times = [t for t in entry.times if t > horizon]
        rs.put(subject, entry)
        if not entry.firing and len(entry.times) >= rule.threshold:
            entry.firing = True
            details: dict[str, Any] = {"count": len(entry.times), "window_s": rule.window}
            if key is not None and rule.group_by is not None:
                details[rule.group_by] = key
            self.raise_(ctx, info, event.ts, subject=subject, details=details)

    def tick(self, rs: RuleState[CountEntry], ctx: Context) -> None:
        horizon = ctx.now - self.rule.window
        for subject in rs:
            entry = rs.entries[subject]
            kept = [t for t in entry.times if t > horizon]
            changed = len(kept) != len(entry.times)
            entry.times = kept
            if entry.firing and len(kept) < self.rule.threshold:
                entry.firing = False
                changed = True
                info = ctx.directory.get(entry.device_id)
                if info is not None:
                    self.clear(ctx, info, ctx.now, subject=subject, details={"count": len(kept)})
            if not kept and not entry.firing:
                rs.drop(subject)
            elif changed:
                rs.touch(subject)
