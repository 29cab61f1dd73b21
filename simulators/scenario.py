"""Scenarios as files: a community, a timeline of what happens, and the alerts it must cause.

A scenario is YAML validated by the models below (unknown keys are errors
that name the key). It plays in a community generated from its ``community``
block, so devices are named by place (``B3-2F-smoke-01``); ``cast`` says which
of them publish during the run. ``timeline`` steps happen at offsets from the
start; ``expect`` lists alerts the platform must raise (rule, subject,
severity, within how long of a step), ``forbid`` alerts it must not, and
``allow`` rules whose alerts may come and go without failing the run.
docs/scenarios.md describes every key; ``bind`` checks a scenario against its
community and returns it with full device ids.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from core.metrics import METRICS
from core.topics import valid_id
from simulators.population import Community, PlacedDevice, generate_community

__all__ = [
    "SCENARIOS_DIR",
    "BoundScenario",
    "Expectation",
    "History",
    "ResponderSpec",
    "Scenario",
    "ScenarioError",
    "Step",
    "bind",
    "load_scenario",
    "parse_seconds",
    "shipped_scenarios",
]

SCENARIOS_DIR = Path(__file__).with_name("scenarios")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86_400.0, None: 1.0}
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_MODEL = ConfigDict(frozen=True, extra="forbid")


class ScenarioError(ValueError):
    """A scenario file that cannot be played; the message names the file and the key."""


def parse_seconds(value: object) -> float:
    """Seconds from a number or ``"90s"``, ``"2m"``, ``"25h"``."""
    if isinstance(value, bool):
        # ValueError, not TypeError: pydantic reports only ValueErrors as field errors.
        raise ValueError("a duration is seconds or a string like '30s'")  # noqa: TRY004
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match[1]) * _UNIT_S[match[2]]
    else:
        raise ValueError(f"{value!r} is not a duration: use seconds or e.g. '30s', '2m', '25h'")
    if seconds < 0:
        raise ValueError("a duration must not be negative")
    return seconds


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
Value = float | int | bool
Data = dict[str, str | int | float | bool]


class CommunitySpec(BaseModel):
    model_config = _MODEL

    buildings: Annotated[int, Field(ge=1, le=50)] = 2
    kind: Literal["urban", "rural"] = "urban"
    seed: int = 0


class History(BaseModel):
    """Readings from before the run, replayed at its start (device time in the past)."""

    model_config = _MODEL

    span: Seconds = Field(gt=0, le=7 * 86_400)
    # Default: each device's own reporting interval.
    every: Seconds | None = Field(default=None, gt=0)
    # Default: the whole cast.
    devices: tuple[str, ...] = ()
    # Metric values held through the history (e.g. a parcel overdue all along).
    set: dict[str, Value] = Field(default_factory=dict)


class Step(BaseModel):
    """One moment of the timeline, for one device or every cast device of a building."""

    model_config = _MODEL

    at: Seconds
    name: Annotated[str, Field(pattern=_NAME)] | None = None
    note: str = ""
    device: str | None = None
    building: str | None = None
    event: Annotated[str, Field(pattern=_NAME)] | None = None
    data: Data = Field(default_factory=dict)
    # Telemetry overrides from this step on; a step that changes them publishes telemetry.
    set: dict[str, Value] = Field(default_factory=dict)
    unset: tuple[str, ...] = ()
    # Freeze these metrics at their current values (a resident who stops moving).
    hold: tuple[str, ...] = ()
    telemetry: bool = False
    # offline: the link dies and the broker publishes the Last Will; silent: the
    # device disconnects cleanly and says nothing; online: it comes back.
    go: Literal["offline", "silent", "online"] | None = None
    repeat: Annotated[int, Field(ge=1, le=1000)] = 1
    every: Seconds = 1.0

    @model_validator(mode="after")
    def _one_target_something_to_do(self) -> Step:
        if (self.device is None) == (self.building is None):
            raise ValueError("a step names exactly one of device or building")
        if not (self.event or self.set or self.unset or self.hold or self.telemetry or self.go):
            raise ValueError("a step needs event, set, unset, hold, telemetry or go")
        if self.repeat > 1 and self.event is None:
            raise ValueError("repeat is for events")
        return self


class Expectation(BaseModel):
    """An alert the platform must raise, or (in ``forbid``) must not.

    ``subject``: ``device:<local id>`` (optionally ``/key:value`` as count rules
    group), ``building:<id>``, ``community``; glob patterns allowed. Without it,
    any subject of the community.
    """

    model_config = _MODEL

    rule: str
    subject: str | None = None
    severity: Literal["info", "warning", "minor", "major", "critical"] | None = None
    # From this step (its name; default: the start of the timeline).
    after: str | None = None
    within: Seconds = Field(default=30.0, gt=0)


class ResponderSpec(BaseModel):
    """A simulated responder (simulators/responder.py) on a team of the scenario's
    community: on the roster around the clock (``on_duty``) or only as the next to
    call; answers after ``accept_after`` and arrives ``travel`` later, or never."""

    model_config = _MODEL

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,20}$")]
    role: Literal["micro_fire_station", "grid_worker", "care_worker", "guard", "property_manager"]
    team: Literal["micro_fire_station", "grid", "care", "security", "property"]
    building: str | None = None
    on_duty: bool = True
    leader: bool = False
    accept_after: Seconds = 5.0
    travel: Seconds = 60.0
    answers: bool = True


class Scenario(BaseModel):
    model_config = _MODEL

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")]
    title: str
    description: str = ""
    community: CommunitySpec = CommunitySpec()
    # The devices that publish during the run: local ids, "building:B2", or "*".
    cast: tuple[str, ...] = Field(min_length=1)
    # Reporting interval of the cast (registered as their expected interval).
    interval: Seconds | None = Field(default=None, ge=1)
    intervals: dict[str, Seconds] = Field(default_factory=dict)
    # The time of day the device models live in ("03:10": asleep, no steps).
    local_time: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] | None = None
    history: History | None = None
    timeline: tuple[Step, ...] = ()
    expect: tuple[Expectation, ...] = ()
    forbid: tuple[Expectation, ...] = ()
    # Rules (glob patterns) whose alerts neither pass nor fail the run.
    allow: tuple[str, ...] = ()
    # After the last step, how long to keep watching for alerts that must not come.
    settle: Seconds = 10.0
    # Faster than this and the timeline would change meaning (windows, durations).
    max_time_scale: float = Field(default=10.0, ge=1.0)
    # People the incident desk may send (docs/incidents.md).
    responders: tuple[ResponderSpec, ...] = ()

    @model_validator(mode="after")
    def _names_are_known(self) -> Scenario:
        names = [s.name for s in self.timeline if s.name]
        if len(names) != len(set(names)):
            raise ValueError("step names must be unique")
        for expectation in (*self.expect, *self.forbid):
            if expectation.after is not None and expectation.after not in {*names, "history"}:
                raise ValueError(f"expectation after {expectation.after!r}: no step of that name")
        if not self.expect and not self.forbid:
            raise ValueError("a scenario declares what must (expect) or must not (forbid) happen")
        return self


@dataclass(frozen=True, slots=True)
class BoundScenario:
    """A scenario in its generated community: the cast resolved to registry devices."""

    scenario: Scenario
    community: Community
    cast: tuple[PlacedDevice, ...]
    # Reporting interval of each cast device, seconds.
    intervals: dict[str, int]

    def device_id(self, local_id: str) -> str:
        return self.community.device(local_id).device.id

    def responder_id(self, local_id: str) -> str:
        return f"{self.community.id}-{local_id}"

    def targets(self, step: Step) -> list[PlacedDevice]:
        if step.device is not None:
            return [p for p in self.cast if p.local_id == step.device]
        return [p for p in self.cast if p.building == step.building]

    def subject(self, pattern: str | None) -> str | None:
        """A scenario subject in the platform's form (``device:<full id>``, ...)."""
        if pattern is None:
            return None
        community = self.community.id
        if pattern == "community":
            return f"community:{community}"
        kind, _, rest = pattern.partition(":")
        if kind == "device":
            return f"device:{community}-{rest}"
        if kind == "building":
            return f"building:{community}/{rest}"
        return pattern


def _select(community: Community, selector: str) -> list[PlacedDevice]:
    if selector == "*":
        return list(community.placed)
    if selector.startswith("building:"):
        building = selector.removeprefix("building:")
        return [p for p in community.placed if p.building == building]
    return [community.device(selector)]


def bind(scenario: Scenario, community_id: str) -> BoundScenario:
    """Generate the scenario's community under ``community_id`` and check every reference."""
    if not valid_id(community_id):
        raise ScenarioError(f"{community_id!r} is not a valid community id")
    spec = scenario.community
    community = generate_community(
        community_id, buildings=spec.buildings, seed=spec.seed, kind=spec.kind
    )
    where = f"scenario {scenario.name}"
    try:
        chosen = {p.local_id: p for s in scenario.cast for p in _select(community, s)}
    except KeyError as exc:
        raise ScenarioError(f"{where}: cast: {exc.args[0]}") from None
    if not chosen:
        raise ScenarioError(f"{where}: the cast selects no device")
    cast = tuple(chosen.values())
    intervals = {}
    for placed in cast:
        own = scenario.intervals.get(placed.local_id, scenario.interval)
        intervals[placed.device.id] = round(own) if own else placed.device.expected_interval_s
    unknown_intervals = set(scenario.intervals) - set(chosen)
    if unknown_intervals:
        raise ScenarioError(f"{where}: intervals for devices not in the cast: {unknown_intervals}")
    buildings = {b.id for b in community.buildings}
    for number, step in enumerate(scenario.timeline, start=1):
        label = f"{where}: timeline step {number} (at {step.at:g}s)"
        if step.device is not None and step.device not in chosen:
            raise ScenarioError(f"{label}: device {step.device!r} is not in the cast")
        if step.building is not None and step.building not in buildings:
            raise ScenarioError(f"{label}: no building {step.building!r}")
        targets = (
            [chosen[step.device]]
            if step.device
            else [p for p in cast if p.building == step.building]
        )
        for placed in targets:
            catalogue = METRICS[placed.device.device_class]
            for metric in (*step.set, *step.unset, *step.hold):
                if metric not in catalogue:
                    raise ScenarioError(
                        f"{label}: {metric!r} is not a metric of {placed.local_id} "
                        f"({placed.device.device_class})"
                    )
    for responder in scenario.responders:
        if responder.building is not None and responder.building not in buildings:
            raise ScenarioError(
                f"{where}: responder {responder.id}: no building {responder.building!r}"
            )
    if scenario.history is not None:
        for local_id in scenario.history.devices:
            if local_id not in chosen:
                raise ScenarioError(f"{where}: history device {local_id!r} is not in the cast")
    for expectation in (*scenario.expect, *scenario.forbid):
        subject = expectation.subject
        if subject and subject.startswith("device:") and not any(ch in subject for ch in "*?["):
            local = subject.removeprefix("device:").split("/", 1)[0]
            if not community.has(local):
                raise ScenarioError(f"{where}: expectation subject: no device {local!r}")
    return BoundScenario(scenario=scenario, community=community, cast=cast, intervals=intervals)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'scenario'}: {error['msg']}"
        for error in exc.errors()
    )


def load_scenario(path: Path) -> Scenario:
    """Read and validate one scenario file; the name defaults to the file's stem."""
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping of keys")
    data.setdefault("name", path.stem.replace("_", "-"))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {_describe(exc)}") from None


def shipped_scenarios(directory: Path = SCENARIOS_DIR) -> dict[str, Path]:
    """Scenario name to file, for the files in ``directory``."""
    return {
        path.stem.replace("_", "-"): path
        for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    }


def matches(pattern: str | None, value: str) -> bool:
    """Glob match; None matches everything."""
    return pattern is None or fnmatch.fnmatchcase(value, pattern)
