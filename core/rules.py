"""Alert rules as data: the validated shape shared by the engine, the API and the CLI.

A rule is a frozen pydantic model, discriminated by ``type``. Durations are
seconds or strings such as ``"90s"``, ``"10m"``, ``"48h"``. Every model forbids
unknown fields, so a typo in a YAML file or an API body is an error naming the
field, never a rule that silently does something else.
"""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from core.events import EVENTS
from core.metric_catalog import DEVICE_CLASSES, METRICS

__all__ = [
    "SEVERITIES",
    "AbsenceRule",
    "AlertState",
    "Chatter",
    "ClockSkewRule",
    "CorrelationRule",
    "CountRule",
    "EventRule",
    "FollowUp",
    "RateRule",
    "Rule",
    "RuleList",
    "Schedule",
    "Scope",
    "Severity",
    "ThresholdRule",
    "dump_rule",
    "escalated",
    "parse_duration",
    "parse_rule",
    "parse_rules",
]

_RULE = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
_ID = r"^[a-z0-9][a-z0-9_.:-]{0,63}$"
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
# Longest duration a rule may wait: a month is past any window a control room uses.
MAX_DURATION_S = 31 * 86_400
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}


class Severity(StrEnum):
    """Five levels; the order is the list order (info lowest)."""

    INFO = "info"
    WARNING = "warning"
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


SEVERITIES: tuple[Severity, ...] = tuple(Severity)


def escalated(severity: Severity | str) -> Severity:
    """One level up, critical stays critical."""
    index = SEVERITIES.index(Severity(severity))
    return SEVERITIES[min(index + 1, len(SEVERITIES) - 1)]


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    SUPPRESSED = "suppressed"
    RESOLVED = "resolved"


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"10m"``, ``"1.5h"``."""
    if isinstance(value, bool):
        # ValueError, not TypeError: pydantic reports only the former as a field error.
        raise ValueError("a duration is a number of seconds or a string like '10m'")  # noqa: TRY004
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration: use seconds or e.g. '90s', '10m', '2h'")
        seconds = float(match[1]) * _UNIT_S[match[2]]
    else:
        raise ValueError("a duration is a number of seconds or a string like '10m'")  # noqa: TRY004
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValueError(f"a duration must be between 0 and {MAX_DURATION_S} s")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Positive = Annotated[float, Field(gt=0)]
MetricName = Annotated[str, Field(pattern=_NAME)]
EventName = Annotated[str, Field(pattern=_NAME)]


class Scope(BaseModel):
    """Where a rule applies. Empty: every device of every community."""

    model_config = _RULE

    community: str | None = None
    device_class: str | None = None
    device: str | None = None

    @field_validator("device_class")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is not None and value not in DEVICE_CLASSES:
            raise ValueError(
                f"unknown device class {value!r}: one of {', '.join(sorted(DEVICE_CLASSES))}"
            )
        return value


class Schedule(BaseModel):
    """Active between ``start`` and ``end`` (local time of the community; may wrap midnight)."""

    model_config = _RULE

    start: time
    end: time
    # ISO weekdays of the window's start (1 = Monday); empty means every day.
    days: tuple[Annotated[int, Field(ge=1, le=7)], ...] = ()

    @model_validator(mode="after")
    def _not_empty(self) -> Schedule:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


class Escalation(BaseModel):
    model_config = _RULE

    # Not acknowledged within this: one severity level up, notified again; repeats.
    after: Duration = Field(gt=0)
    max_steps: Annotated[int, Field(ge=1, le=4)] = 2


class _Base(BaseModel):
    model_config = _RULE

    id: Annotated[str, Field(pattern=_ID)]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=2000)] = ""
    severity: Severity
    enabled: bool = True
    scope: Scope = Scope()
    schedule: Schedule | None = None
    # Resolve the alert when the condition clears (after hysteresis); otherwise it
    # stays open, marked "condition cleared", until someone resolves it.
    auto_resolve: bool = True
    escalation: Escalation | None = None


def _check_metric(metric: str, scope: Scope) -> None:
    classes = [scope.device_class] if scope.device_class else sorted(METRICS)
    if not any(metric in METRICS[c] for c in classes):
        where = f"class {scope.device_class!r}" if scope.device_class else "any device class"
        raise ValueError(f"metric {metric!r} is not reported by {where}")


def _check_events(events: tuple[str, ...], scope: Scope) -> None:
    """A rule listening for an event no device of its scope sends would never fire."""
    classes = [scope.device_class] if scope.device_class else sorted(EVENTS)
    for event in events:
        if not any(event in EVENTS[c] for c in classes):
            where = f"class {scope.device_class!r}" if scope.device_class else "any device class"
            raise ValueError(
                f"event {event!r} is not sent by {where} (see the event catalogue, core/events.py)"
            )


Comparison = Literal[">", ">=", "<", "<="]


class Chatter(BaseModel):
    """ISA-18.2 chattering: ``transitions`` raise/clear transitions within ``window``
    mark the alert chattering; it is then held open (counting occurrences) until
    the value has stayed clear for ``hold``."""

    model_config = _RULE

    transitions: Annotated[int, Field(ge=2, le=100)] = 3
    window: Duration = Field(default=60.0, gt=0)
    hold: Duration = Field(default=300.0, gt=0)


class ThresholdRule(_Base):
    """``metric op raise`` held ``for`` long and for ``min_breaches`` readings in a row;
    clears past ``clear`` (hysteresis) for ``min_clears`` readings in a row."""

    type: Literal["threshold"] = "threshold"
    metric: MetricName
    op: Comparison
    raise_: float = Field(alias="raise")
    clear: float | None = None
    for_: Duration = Field(default=0.0, alias="for")
    min_breaches: Annotated[int, Field(ge=1, le=1000)] = 1
    min_clears: Annotated[int, Field(ge=1, le=1000)] = 1
    # Off-delay: back in range this long (as well as min_clears readings) before it
    # clears; a breach in between counts an occurrence of the same alert.
    off_delay: Duration = 0.0
    chatter: Chatter | None = None

    model_config = ConfigDict(**_RULE, populate_by_name=True)

    @model_validator(mode="after")
    def _coherent(self) -> ThresholdRule:
        _check_metric(self.metric, self.scope)
        if self.clear is not None:
            above = self.op in (">", ">=")
            if above and self.clear > self.raise_:
                raise ValueError(
                    f"clear ({self.clear}) must not be above raise ({self.raise_}) for op {self.op}"
                )
            if not above and self.clear < self.raise_:
                raise ValueError(
                    f"clear ({self.clear}) must not be below raise ({self.raise_}) for op {self.op}"
                )
        return self

    @property
    def clear_level(self) -> float:
        return self.raise_ if self.clear is None else self.clear


class RateRule(_Base):
    """The metric changes faster than ``per_minute`` (rising or falling) over ``window``."""

    type: Literal["rate_of_change"] = "rate_of_change"
    metric: MetricName
    direction: Literal["rising", "falling"] = "rising"
    per_minute: Positive
    # Clears when the rate drops under this (default: half the raise rate).
    clear_per_minute: float | None = Field(default=None, ge=0)
    window: Duration = Field(default=300.0, gt=0)
    # Two readings closer than this give no rate: noise over a tiny dt is not a trend.
    min_span: Duration = Field(default=10.0, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> RateRule:
        _check_metric(self.metric, self.scope)
        if self.clear_per_minute is not None and self.clear_per_minute > self.per_minute:
            raise ValueError("clear_per_minute must not be above per_minute")
        if self.min_span >= self.window:
            raise ValueError("min_span must be shorter than window")
        return self

    @property
    def clear_rate(self) -> float:
        return self.per_minute / 2 if self.clear_per_minute is None else self.clear_per_minute


class AbsenceRule(_Base):
    """No telemetry or event for ``intervals`` x the device's expected interval."""

    type: Literal["absence"] = "absence"
    intervals: Annotated[float, Field(ge=1, le=100)] = 3.0
    # Messages in a row, after the device is back, before the alert clears:
    # a device on the edge of its deadline does not flap open/resolved.
    min_clears: Annotated[int, Field(ge=1, le=100)] = 2
    # Silence multiple per device class, where it differs from ``intervals``.
    class_intervals: dict[str, Annotated[float, Field(ge=1, le=100)]] = Field(default_factory=dict)
    # A Last Will (link lost) raises the alert after this grace, for these classes,
    # instead of waiting for silence; a reconnect within it raises nothing.
    link_loss_grace: Duration = Field(default=60.0, ge=0)
    link_loss_classes: tuple[str, ...] = ("fire", "access", "wearable")

    @model_validator(mode="after")
    def _known_classes(self) -> AbsenceRule:
        for cls in (*self.class_intervals, *self.link_loss_classes):
            if cls not in DEVICE_CLASSES:
                raise ValueError(
                    f"unknown device class {cls!r}: one of {', '.join(sorted(DEVICE_CLASSES))}"
                )
        return self

    def intervals_for(self, device_class: str) -> float:
        return self.class_intervals.get(device_class, self.intervals)


class ClockSkewRule(_Base):
    """A device clock more than ``max_ahead`` ahead of the receive time: one alert per
    device; clears when a batch brings its messages all within the clock tolerance."""

    type: Literal["clock_skew"] = "clock_skew"
    max_ahead: Duration = Field(default=300.0, gt=0)


Match = dict[str, Any]


def _matches_shape(where: Any) -> Match:
    if not isinstance(where, dict):
        # ValueError, not TypeError: pydantic turns only this into a 422 for the field.
        raise ValueError("where is an object of field: value or field: {comparison: value}")  # noqa: TRY004
    for key, condition in where.items():
        if isinstance(condition, dict):
            unknown = set(condition) - {"eq", "ne", "gt", "ge", "lt", "le", "in"}
            if unknown:
                raise ValueError(f"{key}: unknown comparison {sorted(unknown)}")
    return where


class CountRule(_Base):
    """At least ``threshold`` matching events from one subject within ``window``."""

    type: Literal["count"] = "count"
    event: EventName
    where: Annotated[Match, BeforeValidator(_matches_shape)] = Field(default_factory=dict)
    threshold: Annotated[int, Field(ge=2, le=100_000)]
    window: Duration = Field(gt=0)
    # Subject: the device, or the device plus a field of the event data (e.g. "door").
    group_by: str | None = None

    @model_validator(mode="after")
    def _known_event(self) -> CountRule:
        _check_events((self.event,), self.scope)
        return self


class FollowUp(BaseModel):
    """After the event, the alert is raised only if nothing cancels it ``within`` this long."""

    model_config = _RULE

    within: Duration = Field(gt=0)
    # Movement: a reading of this metric above its value at the event cancels.
    cancel_if_rises: MetricName | None = None
    cancel_events: tuple[EventName, ...] = ()
    # When cancelled: raise at this severity instead (e.g. "fall, resident moving"), or nothing.
    otherwise: Severity | None = None

    @model_validator(mode="after")
    def _has_cancel(self) -> FollowUp:
        if self.cancel_if_rises is None and not self.cancel_events:
            raise ValueError("a follow-up needs cancel_if_rises or cancel_events")
        return self


class EventRule(_Base):
    """A device event (fall, SOS, smoke alarm, forced door, tamper ...)."""

    type: Literal["event"] = "event"
    events: Annotated[tuple[EventName, ...], Field(min_length=1)]
    where: Annotated[Match, BeforeValidator(_matches_shape)] = Field(default_factory=dict)
    followup: FollowUp | None = None
    # Events that end the condition (e.g. alarm_cleared, geofence_enter).
    clear_events: tuple[EventName, ...] = ()

    @model_validator(mode="after")
    def _known_events(self) -> EventRule:
        cancel = self.followup.cancel_events if self.followup is not None else ()
        _check_events((*self.events, *self.clear_events, *cancel), self.scope)
        return self


class CorrelationRule(_Base):
    """``min_devices`` independent devices of one building (or community) within ``window``:
    confirmed at ``severity``; a single one is a pre-alarm at ``single_severity``."""

    type: Literal["correlation"] = "correlation"
    events: Annotated[tuple[EventName, ...], Field(min_length=1)]
    window: Duration = Field(gt=0)
    min_devices: Annotated[int, Field(ge=2, le=100)] = 2
    group_by: Literal["building", "community"] = "building"
    single_severity: Severity | None = None
    single_title: str | None = None
    clear_events: tuple[EventName, ...] = ()

    @model_validator(mode="after")
    def _known_events(self) -> CorrelationRule:
        _check_events((*self.events, *self.clear_events), self.scope)
        return self


Rule = Annotated[
    ThresholdRule
    | RateRule
    | AbsenceRule
    | ClockSkewRule
    | CountRule
    | EventRule
    | CorrelationRule,
    Field(discriminator="type"),
]
_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)


class RuleList(BaseModel):
    """A file or a request of several rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> RuleList:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears twice")
            seen.add(rule.id)
        return self


def parse_rule(data: object) -> Rule:
    """Validate one rule (a mapping, as from JSON or YAML)."""
    return _RULE_ADAPTER.validate_python(data)


def parse_rules(data: object) -> list[Rule]:
    """A single rule, a list of rules, or ``{"rules": [...]}``."""
    if isinstance(data, dict) and "rules" in data:
        return RuleList.model_validate(data).rules
    if isinstance(data, list):
        return RuleList.model_validate({"rules": data}).rules
    return [parse_rule(data)]


def dump_rule(rule: Rule) -> dict[str, Any]:
    """JSON-ready form that ``parse_rule`` reads back (aliases such as ``raise`` and ``for``)."""
    return rule.model_dump(mode="json", by_alias=True, exclude_defaults=False)
