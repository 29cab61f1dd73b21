"""Scenarios as files: a community, a timeline of what happens, and the alerts it must cause.

A scenario is YAML validated by the models below (unknown keys are errors
that name the key). It plays in a community generated from its ``community``
block, so devices are named by place (``B3-2F-smoke-01``); ``cast`` says which
of them publish during the run. ``timeline`` steps happen at offsets from the
start; ``expect`` lists alerts the platform must raise (rule, subject,
severity, within how long of a step), ``forbid`` alerts it must not, and
``allow`` rules whose alerts may come and go without failing the run.
``uitds`` declares building fire panels that report through a simulated UITD
over GB/T 26875.3 to the fire bridge (steps play their ``incident``s), and
``alink`` devices that speak an Alink product's thing model over MQTT; both
are judged like the MQTT cast. docs/scenarios.md describes every key; ``bind``
checks a scenario against its community and returns it with full device ids.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from core.errors import ConfigurationError
from core.metric_catalog import METRICS
from core.models import Device
from core.profiles import AlinkProduct
from core.topics import valid_id
from simulators.population import Community, PlacedDevice, generate_community

__all__ = [
    "PANEL_POINTS",
    "SCENARIOS_DIR",
    "AlinkSpec",
    "BoundScenario",
    "Expectation",
    "History",
    "ResponderSpec",
    "Scenario",
    "ScenarioError",
    "Step",
    "UitdSpec",
    "bind",
    "load_scenario",
    "parse_seconds",
    "shipped_scenarios",
]

SCENARIOS_DIR = Path(__file__).with_name("scenarios")
PROFILES_DIR = Path(__file__).resolve().parents[1] / "gateway" / "profiles"
# The points of a simulated panel (simulators/uitd.py): its two smoke detectors
# (``fire``, ``second_detector``, ``fault``) and the panel itself (``main_power``),
# registered as devices ``<uitd>-smoke1``, ``<uitd>-smoke2``, ``<uitd>-panel``.
PANEL_POINTS = ("smoke1", "smoke2", "panel")
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
    # A panel incident a UITD plays (simulators/uitd.py INCIDENTS).
    incident: Literal["fire", "second_detector", "fault", "main_power", "link_cut"] | None = None
    # offline: the link dies and the broker publishes the Last Will; silent: the
    # device disconnects cleanly and says nothing; online: it comes back.
    go: Literal["offline", "silent", "online"] | None = None
    repeat: Annotated[int, Field(ge=1, le=1000)] = 1
    every: Seconds = 1.0

    @model_validator(mode="after")
    def _one_target_something_to_do(self) -> Step:
        if (self.device is None) == (self.building is None):
            raise ValueError("a step names exactly one of device or building")
        if self.incident is not None:
            if self.device is None:
                raise ValueError("an incident is played by one UITD: name it as device")
            if self.event or self.set or self.unset or self.hold or self.telemetry or self.go:
                raise ValueError("a UITD step plays an incident and nothing else")
            return self
        if not (self.event or self.set or self.unset or self.hold or self.telemetry or self.go):
            raise ValueError("a step needs event, set, unset, hold, telemetry, go or incident")
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


_LOCAL_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,30}$"


class UitdSpec(BaseModel):
    """A building fire panel's UITD, registered with its points in a building."""

    model_config = _MODEL

    id: Annotated[str, Field(pattern=_LOCAL_ID)]
    building: str
    # The link-loss interval the bridge watches; the simulator beats at a third of it.
    heartbeat: Seconds = Field(default=60.0, ge=10, le=3600)


class AlinkSpec(BaseModel):
    """A device of an Alink product (a profile in gateway/profiles, or a file's path)."""

    model_config = _MODEL

    id: Annotated[str, Field(pattern=_LOCAL_ID)]
    product: str
    building: str | None = None


class Scenario(BaseModel):
    model_config = _MODEL

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")]
    title: str
    description: str = ""
    community: CommunitySpec = CommunitySpec()
    # The devices that publish during the run: local ids, "building:B2", or "*".
    cast: tuple[str, ...] = ()
    uitds: tuple[UitdSpec, ...] = ()
    alink: tuple[AlinkSpec, ...] = ()
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
        if not (self.cast or self.uitds or self.alink):
            raise ValueError("a scenario needs a cast, uitds or alink devices")
        ids = [u.id for u in self.uitds] + [a.id for a in self.alink]
        if len(ids) != len(set(ids)):
            raise ValueError("uitd and alink ids must be unique")
        return self


@dataclass(frozen=True, slots=True)
class BoundUitd:
    """A scenario's UITD in its community: registry id, 6-byte address, building."""

    spec: UitdSpec
    device_id: str
    address: bytes
    building: str

    def point_id(self, point: str) -> str:
        return f"{self.device_id}-{point}"


@dataclass(frozen=True, slots=True)
class BoundScenario:
    """A scenario in its generated community: the cast resolved to registry devices.

    Alink devices are part of the cast (placed in their building); ``products``
    says which product each speaks. UITDs and their points are not: they speak
    TCP to the fire bridge.
    """

    scenario: Scenario
    community: Community
    cast: tuple[PlacedDevice, ...]
    # Reporting interval of each cast device, seconds.
    intervals: dict[str, int]
    uitds: dict[str, BoundUitd] = field(default_factory=dict)
    # Alink device id -> its product profile.
    products: dict[str, AlinkProduct] = field(default_factory=dict)
    # Local ids outside the generated community (UITDs, their points, Alink devices).
    extra_ids: dict[str, str] = field(default_factory=dict)

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
            local, slash, key = rest.partition("/")
            if local in self.extra_ids:
                return f"device:{self.extra_ids[local]}{slash}{key}"
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
    if scenario.cast and not chosen:
        raise ScenarioError(f"{where}: the cast selects no device")
    buildings = {b.id for b in community.buildings}
    extra: dict[str, str] = {}
    uitds: dict[str, BoundUitd] = {}
    for panel in scenario.uitds:
        if panel.building not in buildings:
            raise ScenarioError(f"{where}: uitd {panel.id}: no building {panel.building!r}")
        if community.has(panel.id):
            raise ScenarioError(f"{where}: uitd {panel.id}: a device of the community has that id")
        # Unique per run (the community id is), short enough for the registry's UITD ids.
        address = hashlib.sha256(f"{community_id}/{panel.id}".encode()).digest()[:6]
        uitd = BoundUitd(panel, f"uitd-{address.hex()}", address, panel.building)
        uitds[panel.id] = uitd
        extra[panel.id] = uitd.device_id
        for point in PANEL_POINTS:
            extra[f"{panel.id}-{point}"] = uitd.point_id(point)
    products: dict[str, AlinkProduct] = {}
    for alink in scenario.alink:
        label = f"{where}: alink {alink.id}"
        if community.has(alink.id):
            raise ScenarioError(f"{label}: a device of the community has that id")
        if alink.building is not None and alink.building not in buildings:
            raise ScenarioError(f"{label}: no building {alink.building!r}")
        product = _product(alink.product, label)
        device = Device(
            id=f"{community_id}-{alink.id}",
            community_id=community_id,
            device_class=product.device_class,
            model=product.product_key,
            name=f"Alink {product.product_key} {alink.id}",
            expected_interval_s=3600,
        )
        chosen[alink.id] = PlacedDevice(
            device=device,
            local_id=alink.id,
            building=alink.building,
            floor=None,
            unit=None,
            location=device.name,
        )
        products[device.id] = product
        extra[alink.id] = device.id
    cast = tuple(chosen.values())
    intervals = {}
    for placed in cast:
        own = scenario.intervals.get(placed.local_id, scenario.interval)
        intervals[placed.device.id] = round(own) if own else placed.device.expected_interval_s
    unknown_intervals = set(scenario.intervals) - set(chosen)
    if unknown_intervals:
        raise ScenarioError(f"{where}: intervals for devices not in the cast: {unknown_intervals}")
    for number, step in enumerate(scenario.timeline, start=1):
        label = f"{where}: timeline step {number} (at {step.at:g}s)"
        if step.device in uitds:
            if step.incident is None:
                raise ScenarioError(
                    f"{label}: UITD {step.device!r} plays an incident, nothing else"
                )
            continue
        if step.incident is not None:
            raise ScenarioError(f"{label}: incident {step.incident!r}: {step.device!r} is no uitd")
        if step.device is not None and step.device not in chosen:
            raise ScenarioError(f"{label}: device {step.device!r} is not in the cast")
        if step.go is not None and step.device is not None and chosen[step.device].id in products:
            raise ScenarioError(f"{label}: go is for MQTT devices, not Alink ones")
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
            speaks = products.get(placed.device.id)
            if speaks is not None:
                _speaks(speaks, step, placed.local_id, label)
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
            if not community.has(local) and local not in extra:
                raise ScenarioError(f"{where}: expectation subject: no device {local!r}")
    return BoundScenario(
        scenario=scenario,
        community=community,
        cast=cast,
        intervals=intervals,
        uitds=uitds,
        products=products,
        extra_ids=extra,
    )


def _speaks(product: AlinkProduct, step: Step, local_id: str, label: str) -> None:
    """An Alink device's step asks only for what its product can post."""
    events = {e.event for e in product.events.values()}
    if step.event is not None and step.event not in events:
        raise ScenarioError(
            f"{label}: product {product.product_key} of {local_id} has no event for"
            f" {step.event!r} (it has {', '.join(sorted(events))})"
        )
    metrics = {m.metric for m in product.properties.values()}
    for metric in step.set:
        if metric not in metrics:
            raise ScenarioError(
                f"{label}: product {product.product_key} of {local_id} has no property"
                f" for {metric!r}"
            )


def _product(name: str, label: str) -> AlinkProduct:
    """An Alink product by profile name (gateway/profiles/<name>.yaml) or path."""
    from simulators.alink import load_product  # the MQTT client stack, only when needed

    path = Path(name)
    if not path.suffix:
        path = PROFILES_DIR / f"{name}.yaml"
    try:
        return load_product(path)
    except ConfigurationError as exc:
        raise ScenarioError(f"{label}: product {name!r}: {exc}") from None


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
