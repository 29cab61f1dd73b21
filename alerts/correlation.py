"""Correlation across devices of one building (or community).

GB 50116-2013 section 4.1.6: a fire is confirmed by the AND of two independent
alarm-triggering devices. One detector alone is a pre-alarm that someone has to
verify; a second, different device of the same building within ``window``
turns the same alert into a confirmed fire (its severity is raised and the
history says by which devices). Devices without a building correlate across
their community.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alerts.evaluator import Context, Evaluator, in_schedule
from alerts.model import EventObs, building_subject, community_subject
from alerts.state import JsonFields, RuleState
from core.rules import CorrelationRule

__all__ = ["CorrelationEntry", "CorrelationEvaluator"]


@dataclass(slots=True)
class CorrelationEntry(JsonFields):
    community_id: str
    building: str | None
    members: dict[str, float] = field(default_factory=dict)  # device -> its latest alarm
    confirmed: bool = False


class CorrelationEvaluator(Evaluator):
    rule: CorrelationRule

    def events(self) -> tuple[str, ...]:
        return (*self.rule.events, *self.rule.clear_events)

    def entry_from_json(self, data: Mapping[str, Any]) -> CorrelationEntry:
        return CorrelationEntry(**data)

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        return None  # the open alert absorbs further raises; nothing to restore

    def _group(self, event: EventObs) -> tuple[str, str | None]:
        info = event.device
        if self.rule.group_by == "building" and info.building:
            return building_subject(info.community_id, info.building), info.building
        return community_subject(info.community_id), None

    def on_event(self, event: EventObs, rs: RuleState[CorrelationEntry], ctx: Context) -> None:
        rule = self.rule
        info = event.device
        subject, building = self._group(event)
        entry = rs.get(subject)
        if event.event in rule.clear_events:
            if entry is None or info.device_id not in entry.members:
                return
            alarm = event.data.get("alarm")
            if alarm is not None and alarm not in rule.events:
                return
            del entry.members[info.device_id]
            if entry.members:
                rs.touch(subject)
                return
            rs.drop(subject)
            self.clear(ctx, info, event.ts, subject=subject, details={"event": event.event})
            return
        if not in_schedule(rule.schedule, event.ts, info.time_zone):
            return
        if entry is None:
            entry = CorrelationEntry(info.community_id, building)
        horizon = event.ts - rule.window
        entry.members = {d: t for d, t in entry.members.items() if t >= horizon}
        if event.ts <= entry.members.get(info.device_id, float("-inf")):
            return  # the same alarm again
        new_member = info.device_id not in entry.members
        entry.members[info.device_id] = event.ts
        rs.put(subject, entry)
        if not new_member:
            return
        devices = sorted(entry.members)
        details = {
            "event": event.event,
            "devices": devices,
            "building": building,
            "window_s": rule.window,
        }
        if len(devices) >= rule.min_devices:
            entry.confirmed = True
            self.raise_(ctx, info, event.ts, subject=subject, details=details)
        elif rule.single_severity is not None:
            self.raise_(
                ctx,
                info,
                event.ts,
                subject=subject,
                severity=rule.single_severity,
                title=rule.single_title or f"{rule.title} (unconfirmed: verify)",
                details=details,
            )

    def tick(self, rs: RuleState[CorrelationEntry], ctx: Context) -> None:
        horizon = ctx.now - self.rule.window
        for subject in rs:
            entry = rs.entries[subject]
            kept = {d: t for d, t in entry.members.items() if t >= horizon}
            if len(kept) == len(entry.members):
                continue
            if kept:
                entry.members = kept
                rs.touch(subject)
            else:
                rs.drop(subject)
