"""Absence rules: no telemetry or event for N x the device's expected interval,
or a lost link (a Last Will) not restored within a short grace.

"Seen" is the device time of what it sent (capped at receive time), never a
retained status message and never the time we happened to receive old
queued data: a device whose last words are an hour old is offline even if
the broker hands them over now. A device that never reported is not offline,
it is not commissioned yet. The scan is vectorised over all devices; coming
back clears the alert only after ``min_clears`` messages in a row, so a
device on the edge of its deadline does not flap.

A Last Will is the broker saying the link is gone, now: for the classes where
that matters (fire, access, wearable SOS) the alert is raised after
``link_loss_grace`` instead of after silence (a smoke alarm reporting hourly
would otherwise show offline 3 h late), and an online status resolves it. A
reconnect within the grace raises nothing, so a reconnect storm does not flap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from alerts.evaluator import Context, Evaluator, in_schedule
from alerts.model import DeviceInfo, Directory, FloatArray, device_subject
from alerts.state import JsonFields, RuleState
from core.rules import AbsenceRule

__all__ = ["AbsenceEntry", "AbsenceEvaluator"]


@dataclass(slots=True)
class AbsenceEntry(JsonFields):
    device_id: str
    since: float  # last sign of life before the silence (or when the link was lost)
    back: int = 0  # messages since it came back
    link: bool = False  # raised for a lost link: an online status resolves it


class AbsenceEvaluator(Evaluator):
    rule: AbsenceRule
    # Entries exist only while an alert is open, and open alerts are reloaded on start.
    persistent: ClassVar[bool] = False

    def __init__(self, rule: AbsenceRule) -> None:
        super().__init__(rule)
        self._limits: FloatArray | None = None
        self._limits_for: tuple[int, int] = (-1, -1)

    def entry_from_json(self, data: Mapping[str, Any]) -> AbsenceEntry:
        return AbsenceEntry(**data)

    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        if rs.get(subject) is None:
            rs.load(subject, AbsenceEntry(subject.removeprefix("device:"), since))

    def seen(self, rs: RuleState[AbsenceEntry], seen: dict[str, float], ctx: Context) -> None:
        """Devices that sent something in this batch."""
        if not rs.entries:
            return
        for subject in rs:
            entry = rs.entries[subject]
            ts = seen.get(entry.device_id)
            if ts is None or ts <= entry.since:
                continue
            entry.since = ts
            info = ctx.directory.get(entry.device_id)
            if info is None or ctx.now - ts > self._allowed(info):
                continue  # old data delivered late: it was alive then, not now
            entry.back += 1
            if entry.back >= self.rule.min_clears:
                rs.drop(subject)
                self.clear(ctx, info, ts, details={"back_at": ts})

    def _allowed(self, info: DeviceInfo) -> float:
        return self.rule.intervals_for(info.device_class) * info.expected_interval_s

    def links(
        self, rs: RuleState[AbsenceEntry], links: dict[str, tuple[bool, float]], ctx: Context
    ) -> None:
        """Status messages: an online status resolves an alert raised for a lost link."""
        for device_id, (online, at) in links.items():
            subject = device_subject(device_id)
            entry = rs.get(subject)
            if not online or entry is None or not entry.link:
                continue
            info = ctx.directory.get(device_id)
            rs.drop(subject)
            if info is not None:
                self.clear(ctx, info, at, details={"back_at": at, "reason": "reconnected"})

    def links_lost(self, rs: RuleState[AbsenceEntry], ctx: Context) -> None:
        """Links lost (a Will) longer ago than the grace, with nothing since."""
        rule = self.rule
        for device_id, lost_at in ctx.state.links_down.items():
            if ctx.now - lost_at < rule.link_loss_grace:
                continue
            subject = device_subject(device_id)
            if rs.get(subject) is not None:
                continue
            info = ctx.directory.get(device_id)
            if (
                info is None
                or info.state != "active"
                or info.device_class not in rule.link_loss_classes
                or not self.applies(info)
                or not in_schedule(rule.schedule, ctx.now, info.time_zone)
            ):
                continue
            rs.put(subject, AbsenceEntry(device_id, lost_at, link=True))
            self.raise_(
                ctx,
                info,
                lost_at + rule.link_loss_grace,
                details={"reason": "link_lost", "link_lost_at": lost_at},
            )

    def _deadlines(self, devices: list[str], directory: Directory) -> FloatArray:
        """Allowed silence per presence slot; NaN where the rule does not apply."""
        key = (len(devices), id(directory))
        if self._limits is None or self._limits_for != key:
            limits = np.full(len(devices), np.nan)
            for slot, device_id in enumerate(devices):
                info = directory.get(device_id)
                if info is not None and info.state == "active" and self.applies(info):
                    limits[slot] = self._allowed(info)
            self._limits, self._limits_for = limits, key
        return self._limits

    def tick(self, rs: RuleState[AbsenceEntry], ctx: Context) -> None:
        devices, last_seen = ctx.state.presence.view()
        if not devices:
            return
        limits = self._deadlines(devices, ctx.directory)
        with np.errstate(invalid="ignore"):
            overdue = np.flatnonzero(ctx.now - last_seen > limits)
        for slot in overdue:
            device_id = devices[slot]
            subject = device_subject(device_id)
            entry = rs.get(subject)
            since = float(last_seen[slot])
            if entry is not None:
                entry.back = 0  # silent again before it counted as back
                continue
            info = ctx.directory[device_id]
            if not in_schedule(self.rule.schedule, ctx.now, info.time_zone):
                continue
            rs.put(subject, AbsenceEntry(device_id, since))
            self.raise_(
                ctx,
                info,
                since + float(limits[slot]),
                details={
                    "reason": "silent",
                    "last_seen": since,
                    "expected_interval_s": info.expected_interval_s,
                    "intervals": self.rule.intervals_for(info.device_class),
                },
            )
