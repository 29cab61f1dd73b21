"""What every rule type's evaluator shares: scope, schedule, and how changes are emitted."""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from alerts.model import (
    AlertChange,
    ChangeKind,
    DeviceInfo,
    Directory,
    EventObs,
    ReadingColumns,
    device_subject,
)
from alerts.state import EngineState, RuleState
from core.rules import Rule, Schedule, Severity

__all__ = ["Context", "Evaluator", "in_schedule", "matches"]


@dataclass(slots=True)
class Context:
    """One evaluation: the inputs that are not state, and where changes go."""

    directory: Directory
    now: float
    state: EngineState
    changes: list[AlertChange] = field(default_factory=list)
    # False while intake is behind (backlog, broker away): silence since a device's
    # last reading then proves nothing, so timers that end on silence wait.
    silence_counts: bool = True


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def in_schedule(schedule: Schedule | None, ts: float, time_zone: str) -> bool:
    """True when ``ts`` falls in the window, read in the community's local time."""
    if schedule is None:
        return True
    local = datetime.fromtimestamp(ts, UTC).astimezone(_zone(time_zone))
    now = local.time().replace(tzinfo=None)
    start, end = schedule.start, schedule.end
    if start < end:
        inside = start <= now < end
        day = local.isoweekday()
    else:  # wraps midnight: 22:00-06:00
        inside = now >= start or now < end
        # The window belongs to the day it started on.
        day = local.isoweekday() if now >= start else (local.isoweekday() - 2) % 7 + 1
    return inside and (not schedule.days or day in schedule.days)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "in": lambda a, b: a in b,
}


def matches(where: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """``{"confidence": {"ge": 0.8}, "door": "north-gate"}`` against event data."""
    for key, condition in where.items():
        if key not in data:
            return False
        value = data[key]
        if isinstance(condition, dict):
            try:
                if not all(_COMPARE[op](value, arg) for op, arg in condition.items()):
                    return False
            except TypeError:  # comparing a string with a number: no match
                return False
        elif value != condition:
            return False
    return True


class Evaluator(ABC):
    """One compiled rule. Subclasses say which readings and events they want."""

    persistent: ClassVar[bool] = True

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        scope = rule.scope
        self._community = scope.community
        self._class = scope.device_class
        self._device = scope.device

    # -- what it listens to -------------------------------------------------

    def metrics(self) -> tuple[str, ...]:
        return ()

    def events(self) -> tuple[str, ...]:
        return ()

    def watched(self) -> tuple[str, ...]:
        """Metrics whose latest value per device this rule needs (follow-ups)."""
        return ()

    @property
    def device_class(self) -> str | None:
        return self._class

    def applies(self, info: DeviceInfo) -> bool:
        return (
            (self._class is None or info.device_class == self._class)
            and (self._community is None or info.community_id == self._community)
            and (self._device is None or info.device_id == self._device)
        )

    def new_state(self) -> RuleState[Any]:
        return RuleState(persistent=self.persistent)

    # -- evaluation -----------------------------------------------------------

    def on_readings(
        self, metric: str, group: ReadingColumns, rs: RuleState[Any], ctx: Context
    ) -> None:
        return None

    def on_event(self, event: EventObs, rs: RuleState[Any], ctx: Context) -> None:
        return None

    def tick(self, rs: RuleState[Any], ctx: Context) -> None:
        return None

    @abstractmethod
    def entry_from_json(self, data: Mapping[str, Any]) -> Any:
        """Rebuild a persisted entry."""

    @abstractmethod
    def mark_firing(self, rs: RuleState[Any], subject: str, since: float) -> None:
        """An alert of this rule is active for ``subject`` (restart, lost state)."""

    # -- emitting -------------------------------------------------------------

    def raise_(
        self,
        ctx: Context,
        info: DeviceInfo,
        at: float,
        *,
        subject: str | None = None,
        severity: Severity | None = None,
        title: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._change(ChangeKind.RAISE, ctx, info, at, subject, severity, title, details)

    def clear(
        self,
        ctx: Context,
        info: DeviceInfo,
        at: float,
        *,
        subject: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self._change(ChangeKind.CLEAR, ctx, info, at, subject, None, None, details)

    def _change(
        self,
        kind: ChangeKind,
        ctx: Context,
        info: DeviceInfo,
        at: float,
        subject: str | None,
        severity: Severity | None,
        title: str | None,
        details: Mapping[str, Any] | None,
    ) -> None:
        ctx.changes.append(
            AlertChange(
                kind=kind,
                rule=self.rule,
                subject=subject or device_subject(info.device_id),
                community_id=info.community_id,
                at=at,
                severity=severity or self.rule.severity,
                title=title or self.rule.title,
                device_id=info.device_id,
                building=info.building,
                details=details or {},
            )
        )
