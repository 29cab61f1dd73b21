"""Decoder profiles: what a product's Alink identifiers, or a vendor's JSON, mean to us.

Two kinds, one file each (``profiles/*.yaml``, loaded by ``gateway.decoders``):

- ``kind: alink``: a product key, the device class its devices are, and which
  property identifiers are which metrics (with scale) and which event
  identifiers are which catalogue events;
- ``kind: json``: a topic pattern with one ``{device}`` level, JSON paths for
  the device id, time, seq, each metric (unit, scale, offset) and each event.

Every name is checked against the metric and event catalogues when the profile
is loaded, so a profile cannot produce a reading that validation would refuse
for its name or unit: a typo is an error with the file and the field, not a
stream of dead letters.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.alink import ROOT as ALINK_ROOT
from core.alink import valid_product_key
from core.events import EVENTS
from core.metric_catalog import METRICS
from core.topics import ROOT as NATIVE_ROOT

__all__ = [
    "AlinkProduct",
    "EventMap",
    "JsonPath",
    "JsonProfile",
    "MetricMap",
    "Profile",
    "TimeSpec",
    "TopicPattern",
    "parse_profile",
]

_STRICT = ConfigDict(frozen=True, extra="forbid")
DEVICE_LEVEL = "{device}"
# A path step: .name or [index]; names as JSON keys vendors use (no dots or brackets).
_STEP = re.compile(r"\.([A-Za-z0-9_$@-][A-Za-z0-9_$@ -]{0,63})|\[([0-9]{1,4})\]")
# Paths are short: deep ones are a misread vendor document, not a real payload.
MAX_PATH_STEPS = 12
# A literal topic level of a pattern: no wildcards, no separators.
_LEVEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# Scales and offsets keep a value inside what a metric's range can mean.
_MAX_FACTOR = 1e9


class JsonPath:
    """``$.a.b[0].c``: object keys and array indexes, nothing else (no filters or
    wildcards, so a path points at one value and resolving it is a short loop)."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str) -> None:
        if not text.startswith("$"):
            raise ValueError(f"JSON path {text!r} must start with '$'")
        steps: list[str | int] = []
        position = 1
        while position < len(text):
            match = _STEP.match(text, position)
            if match is None:
                raise ValueError(
                    f"JSON path {text!r}: cannot read from {text[position:]!r} "
                    "(use .key or [index])"
                )
            key, index = match.groups()
            steps.append(key if key is not None else int(index))
            position = match.end()
        if not steps:
            raise ValueError("JSON path '$' names the whole payload: name a value in it")
        if len(steps) > MAX_PATH_STEPS:
            raise ValueError(f"JSON path {text!r} has more than {MAX_PATH_STEPS} steps")
        self.text = text
        self.steps = tuple(steps)

    def find(self, document: Any) -> tuple[bool, Any]:
        """(found, value); a missing key, an index past the end or a step into a
        scalar is "not found", never an exception."""
        node = document
        for step in self.steps:
            if isinstance(step, str):
                if not isinstance(node, dict) or step not in node:
                    return False, None
                node = node[step]
            else:
                if not isinstance(node, list) or step >= len(node):
                    return False, None
                node = node[step]
        return True, node

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"


def _path(value: object) -> JsonPath:
    if isinstance(value, JsonPath):
        return value
    if not isinstance(value, str):
        raise ValueError("a JSON path is a string such as '$.data.temp'")  # noqa: TRY004 - pydantic wants ValueError
    return JsonPath(value)


Path = Annotated[JsonPath, BeforeValidator(_path)]


class _PathModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class TopicPattern:
    """``vendor/acme/{device}/up``: literal levels, ``+`` for any level, and one
    ``{device}`` level that names the device (and that the broker's ACL binds)."""

    __slots__ = ("device_index", "levels", "text")

    def __init__(self, text: str) -> None:
        levels = text.split("/")
        if levels.count(DEVICE_LEVEL) != 1:
            raise ValueError(f"topic {text!r} needs exactly one {DEVICE_LEVEL} level")
        if levels[0] in (NATIVE_ROOT, "") or text.startswith(ALINK_ROOT + "/"):
            raise ValueError(
                f"topic {text!r}: '{NATIVE_ROOT}/…' and '/…' topics belong to the native "
                "and Alink contracts"
            )
        for level in levels:
            if level not in (DEVICE_LEVEL, "+") and _LEVEL.fullmatch(level) is None:
                raise ValueError(
                    f"topic {text!r}: level {level!r} is not a literal, '+' or {DEVICE_LEVEL}"
                )
        if len(levels) > 8:
            raise ValueError(f"topic {text!r} has more than 8 levels")
        self.text = text
        self.levels = tuple(levels)
        self.device_index = levels.index(DEVICE_LEVEL)

    @property
    def mqtt_filter(self) -> str:
        """What the pipeline subscribes to."""
        return "/".join("+" if level == DEVICE_LEVEL else level for level in self.levels)

    def for_device(self, device_id: str) -> str:
        """What one device may publish: its own level pinned (the broker's ACL)."""
        return "/".join(device_id if level == DEVICE_LEVEL else level for level in self.levels)

    def match(self, topic: str) -> str | None:
        """The device level's value when ``topic`` fits the pattern, else None."""
        parts = topic.split("/", len(self.levels))
        if len(parts) != len(self.levels):
            return None
        for level, part in zip(self.levels, parts, strict=True):
            if level not in (DEVICE_LEVEL, "+") and level != part:
                return None
        return parts[self.device_index]

    def __repr__(self) -> str:
        return f"TopicPattern({self.text!r})"


def _check_metric(device_class: str, metric: str, unit: str | None) -> None:
    specs = METRICS.get(device_class)
    if specs is None:
        raise ValueError(f"unknown device class {device_class!r}; one of {sorted(METRICS)}")
    spec = specs.get(metric)
    if spec is None:
        raise ValueError(f"{metric!r} is not a metric of class {device_class!r}")
    if unit is not None and unit != spec.unit:
        raise ValueError(
            f"{metric!r} is stored in {spec.unit!r}, not {unit!r}: scale the value into it"
        )


def _check_event(device_class: str, event: str) -> None:
    if event not in EVENTS.get(device_class, frozenset()):
        raise ValueError(f"{event!r} is not an event of class {device_class!r} (core/events.py)")


class MetricMap(BaseModel):
    """stored value = raw value * scale + offset, in the metric's catalogue unit."""

    model_config = _STRICT

    metric: str
    unit: str | None = None  # optional, checked against the catalogue: documents the scaling
    scale: Annotated[float, Field(allow_inf_nan=False, ge=-_MAX_FACTOR, le=_MAX_FACTOR)] = 1.0
    offset: Annotated[float, Field(allow_inf_nan=False, ge=-_MAX_FACTOR, le=_MAX_FACTOR)] = 0.0

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0 or not math.isfinite(value):
            raise ValueError("scale must be a finite number other than 0")
        return value


class EventMap(BaseModel):
    model_config = _STRICT

    event: str


def _unique(metrics: list[str], where: str) -> None:
    # Two sources for one metric would make two rows with one key (device, metric, time).
    twice = sorted({m for m in metrics if metrics.count(m) > 1})
    if twice:
        raise ValueError(f"{where}: {twice[0]!r} is mapped more than once")


def _shorthand(value: object, field: str) -> object:
    # `Temp: temperature` is short for `Temp: {metric: temperature}`.
    return {field: value} if isinstance(value, str) else value


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")


class AlinkProduct(BaseModel):
    model_config = _STRICT

    kind: Literal["alink"]
    product_key: str
    device_class: str
    description: str = ""
    properties: dict[str, MetricMap] = Field(min_length=1)
    events: dict[str, EventMap] = Field(default_factory=dict)
    # A property the table does not name: refuse the post (unknown_metric) or skip it.
    unknown_properties: Literal["reject", "ignore"] = "reject"

    @field_validator("product_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not valid_product_key(value):
            raise ValueError("a product key is 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("properties", "events", mode="before")
    @classmethod
    def _shorthands(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, dict):
            field = "metric" if info.field_name == "properties" else "event"
            return {k: _shorthand(v, field) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _catalogue(self) -> AlinkProduct:
        _unique([m.metric for m in self.properties.values()], "properties")
        for identifier, mapping in self.properties.items():
            if _IDENTIFIER.fullmatch(identifier) is None:
                raise ValueError(f"properties.{identifier}: not an Alink identifier")
            try:
                _check_metric(self.device_class, mapping.metric, mapping.unit)
            except ValueError as exc:
                raise ValueError(f"properties.{identifier}: {exc}") from None
        for identifier, event in self.events.items():
            if _IDENTIFIER.fullmatch(identifier) is None or identifier == "property":
                raise ValueError(f"events.{identifier}: not an Alink event identifier")
            try:
                _check_event(self.device_class, event.event)
            except ValueError as exc:
                raise ValueError(f"events.{identifier}: {exc}") from None
        return self


class TimeSpec(_PathModel):
    path: Path
    format: Literal["epoch_ms", "epoch_s", "iso8601"] = "epoch_ms"


class JsonMetric(MetricMap):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    path: Path
    # A metric missing from a message is skipped unless required.
    required: bool = False


class JsonEvent(_PathModel):
    """The event happens when the value at ``path`` equals ``equals`` (or, without
    ``equals``, when it is present and true); ``data`` copies values into the event."""

    event: str
    path: Path
    equals: str | int | bool | None = None
    data: dict[str, Path] = Field(default_factory=dict)


class JsonProfile(_PathModel):
    kind: Literal["json"]
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    description: str = ""
    device_class: str
    topic: TopicPattern
    # When given, the payload's device id must be the topic's (a gateway speaking
    # for other devices is not what the broker's ACL can bind).
    device_id: Path | None = None
    time: TimeSpec | None = None  # without it, the time of receipt
    seq: Path | None = None
    metrics: list[JsonMetric] = Field(default_factory=list)
    events: list[JsonEvent] = Field(default_factory=list)

    @field_validator("topic", mode="before")
    @classmethod
    def _topic(cls, value: object) -> object:
        if isinstance(value, str):
            return TopicPattern(value)
        return value

    @model_validator(mode="after")
    def _catalogue(self) -> JsonProfile:
        if not self.metrics and not self.events:
            raise ValueError("a profile needs at least one metric or event")
        _unique([m.metric for m in self.metrics], "metrics")
        for i, metric in enumerate(self.metrics):
            try:
                _check_metric(self.device_class, metric.metric, metric.unit)
            except ValueError as exc:
                raise ValueError(f"metrics.{i}: {exc}") from None
        for i, event in enumerate(self.events):
            try:
                _check_event(self.device_class, event.event)
            except ValueError as exc:
                raise ValueError(f"events.{i}: {exc}") from None
        return self


Profile = AlinkProduct | JsonProfile


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    profile: Annotated[AlinkProduct | JsonProfile, Field(discriminator="kind")]


def parse_profile(data: object) -> Profile:
    """One profile from parsed YAML; ``pydantic.ValidationError`` names the field."""
    return _Document.model_validate({"profile": data}).profile
