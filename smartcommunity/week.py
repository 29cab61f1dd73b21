"""A simulated week in minutes: one virtual clock for devices, validation and rule timers.

A generated community (buildings, flats, its fire sensors, lockers, doors and
care watches) lives through ``days`` days of routine: every device reports at
its own registered interval with jitter, from the same models the simulator
publishes (day and night, parcels, doors, wearers). Scripted incidents are laid
on top: a confirmed fire, an SOS, a fall at night, a forced door, a gas leak, a
fire sensor whose link drops (its Last Will), a watch that goes silent, a clock
3 h fast, a watch battery running down. Every message is encoded as a device
would send it and validated by the pipeline's own ``decode`` (the payload
contract and the event catalogue) with the virtual receive time; what passes
is evaluated by the shipped rule pack in the real ``Engine``, whose timers
(``tick``) run on the same clock. The broker and the database are not in the
loop: the alarm stream is decided by models, validation and rules, and leaving
out I/O is what lets a week of 2,000 devices run in minutes.

The alarm report counts annunciations (an alert opening; repeats of an open one
are occurrences, not alarms) and gives the EEMUA 191 figures per operator per
10 minutes, chattering and standing alarms, the top rules, and each scripted
incident found or missed. Operators resolve alerts that do not resolve
themselves after ``OPERATOR_RESOLVE_S``, as a control room would.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.engine import Engine
from alerts.model import AlertChange, ChangeKind, DeviceInfo, Observations, observations
from alerts.pack import default_rules
from alerts.state import EngineState
from core.decode import decode
from core.errors import RejectedMessage
from core.models import DeviceEvent, Reading
from core.rules import Rule
from core.topics import Channel, DeviceTopic
from simulators.devices import build_model
from simulators.fleet import event_payload, telemetry_payload
from simulators.model import DeviceModel, SimEvent
from simulators.population import Community, PlacedDevice, generate_community

__all__ = ["Alarm", "Incident", "WeekReport", "devices_per_building", "run_week"]

# Virtual seconds between engine ticks and message batches (the pipeline ticks at
# 0.5 s and batches in milliseconds; 5 s of virtual time is fine-grained for rules
# whose windows are minutes).
STEP_S = 5.0
# Report intervals vary by +- this share (clock drift, radio retries).
JITTER = 0.05
# An operator handles an alert that does not resolve itself within this long.
OPERATOR_RESOLVE_S = 15 * 60
# EEMUA 191: alarms per operator per 10 minutes.
WINDOW_S = 600
# ISA-18.2: the same alarm 3 times or more within a minute is chattering.
CHATTER_COUNT, CHATTER_WINDOW_S = 3, 60.0
# Open longer than a day is a standing alarm.
STANDING_S = 24 * 3600
# Devices per building in a generated community (~39): buildings for a fleet size.
_DEVICES_PER_BUILDING = 778 / 20
# An incident is found if its alarm opens within this long of the incident.
FIND_WITHIN_S = 3600.0


def devices_per_building(devices: int) -> int:
    """Buildings that give about ``devices`` devices."""
    return max(1, round(devices / _DEVICES_PER_BUILDING))


@dataclass(slots=True)
class Alarm:
    rule_id: str
    subject: str
    severity: str
    raised_at: float
    device_id: str | None
    auto_resolve: bool
    cleared_at: float | None = None
    resolved_at: float | None = None
    occurrences: int = 1
    incident: str | None = None  # the scripted incident it belongs to


@dataclass(slots=True)
class Incident:
    """One scripted incident: what happens, and the alarm it must produce."""

    name: str
    at: float  # virtual epoch seconds
    device_id: str
    expect_rule: str
    expect_subject: str
    # What it does to its devices: events, metric overrides, silence, statuses, clock.
    events: list[tuple[float, str, SimEvent]] = field(default_factory=list)
    metrics: dict[str, Callable[[float], float | None]] = field(default_factory=dict)
    silent: tuple[float, float] | None = None
    will_at: float | None = None
    online_at: float | None = None
    clock_ahead: tuple[float, float, float] | None = None  # start, end, seconds ahead
    within: float = FIND_WITHIN_S  # its alarm must open within this long
    found_at: float | None = None

    @property
    def found(self) -> bool:
        return self.found_at is not None


@dataclass(slots=True)
class WeekReport:
    devices: int
    buildings: int
    days: float
    operators: int
    messages: int
    dead_letters: Counter[str]
    alarms: list[Alarm]
    incidents: list[Incident]
    start: float
    wall_s: float = 0.0

    # -- the figures ------------------------------------------------------------------

    @property
    def routine(self) -> list[Alarm]:
        return [a for a in self.alarms if a.incident is None]

    def windows(self, alarms: Sequence[Alarm]) -> list[int]:
        count = max(1, math.ceil(self.days * 86_400 / WINDOW_S))
        per = [0] * count
        for alarm in alarms:
            per[min(count - 1, int((alarm.raised_at - self.start) // WINDOW_S))] += 1
        return per

    def eemua(self, alarms: Sequence[Alarm]) -> dict[str, float]:
        per = [n / self.operators for n in self.windows(alarms)]
        return {
            "average": sum(per) / len(per),
            "peak": max(per),
            "share_above_1": sum(1 for n in per if n > 1) / len(per),
            "share_above_10": sum(1 for n in per if n > 10) / len(per),
        }

    def chattering(self) -> list[tuple[str, str]]:
        times: dict[tuple[str, str], list[float]] = {}
        for alarm in self.alarms:
            times.setdefault((alarm.rule_id, alarm.subject), []).append(alarm.raised_at)
        found = []
        for key, raised in times.items():
            raised.sort()
            if any(
                raised[i + CHATTER_COUNT - 1] - raised[i] <= CHATTER_WINDOW_S
                for i in range(len(raised) - CHATTER_COUNT + 1)
            ):
                found.append(key)
        return sorted(found)

    def standing(self, end: float) -> list[Alarm]:
        def closed(a: Alarm) -> float:
            return a.resolved_at if a.resolved_at is not None else end

        return [a for a in self.alarms if closed(a) - a.raised_at > STANDING_S]

    def healthy_offline(self) -> list[Alarm]:
        """Offline alarms from devices no incident touched: false alarms."""
        touched = {i.device_id for i in self.incidents}
        return [
            a for a in self.alarms if a.rule_id == "device.offline" and a.device_id not in touched
        ]

    def render(self) -> str:
        end = self.start + self.days * 86_400
        lines = [
            f"alarm report: {self.devices} devices in {self.buildings} buildings, "
            f"{self.days:g} days, {self.operators} operator(s); {self.messages:,} messages "
            f"in {self.wall_s:.0f} s",
            f"dead letters: {sum(self.dead_letters.values())}"
            + (f" {dict(self.dead_letters)}" if self.dead_letters else ""),
            f"alarms: {len(self.alarms)} ({len(self.routine)} outside incidents)",
        ]
        for label, alarms in (("all alarms", self.alarms), ("outside incidents", self.routine)):
            f = self.eemua(alarms)
            lines.append(
                f"EEMUA 191 per operator per 10 min, {label}: average {f['average']:.3f}, "
                f"peak {f['peak']:g}, windows > 1: {f['share_above_1'] * 100:.2f} %, "
                f"> 10: {f['share_above_10'] * 100:.2f} %"
            )
        chatter = self.chattering()
        lines.append(f"chattering (>= {CHATTER_COUNT} in {CHATTER_WINDOW_S:g} s): {len(chatter)}")
        lines.extend(f"  {rule} {subject}" for rule, subject in chatter[:10])
        standing = self.standing(end)
        lines.append(f"standing (open > 24 h): {len(standing)}")
        lines.extend(f"  {a.rule_id} {a.subject}" for a in standing[:10])
        lines.append(f"offline alarms from healthy devices: {len(self.healthy_offline())}")
        lines.append("top rules by alarms:")
        for rule, n in Counter(a.rule_id for a in self.alarms).most_common(10):
            lines.append(f"  {n:>6}  {rule}")
        found = sum(1 for i in self.incidents if i.found)
        lines.append(f"scripted incidents: {found} of {len(self.incidents)} found")
        for i in self.incidents:
            when = datetime.fromtimestamp(i.at, UTC).isoformat(timespec="minutes")
            verdict = (
                f"found after {i.found_at - i.at:.0f} s" if i.found_at is not None else "MISSED"
            )
            lines.append(f"  {i.name:<22} {when}  {i.expect_rule:<22} {verdict}")
        return "\n".join(lines)


class _Device:
    __slots__ = ("info", "interval", "last_ms", "model", "seq", "topic")

    def __init__(self, info: DeviceInfo, model: DeviceModel, interval: float) -> None:
        self.info = info
        self.model = model
        self.interval = interval
        self.seq = 1
        self.last_ms = 0
        self.topic = {
            ch: DeviceTopic(info.community_id, info.device_class, info.device_id, ch)
            for ch in Channel
        }


def _pick(
    community: Community, rng: random.Random, model_part: str, used: set[str]
) -> list[PlacedDevice]:
    """One device of a model no other incident uses, as a one-element list to unpack."""
    free = [p for p in community.placed if model_part in p.device.model and p.device.id not in used]
    picked = rng.sample(free, 1)
    used.add(picked[0].device.id)
    return picked


def _while(
    start: float, end: float, value: Callable[[float], float]
) -> Callable[[float], float | None]:
    """A metric override between ``start`` and ``end`` (``value`` of the seconds since
    ``start``); None (the model's own value) outside."""
    return lambda now: value(now - start) if start <= now < end else None


def _incidents(community: Community, start: float, days: float, seed: int) -> list[Incident]:
    """The scripted incidents, spread over the days (each at a local time that makes sense)."""
    rng = random.Random(f"{seed}/incidents")  # noqa: S311 - simulation, not secrets
    tz = ZoneInfo(community.time_zone)
    span = max(1, int(days))

    def at(day: int, hour: float) -> float:
        local = datetime.fromtimestamp(start, tz) + timedelta(days=day % span, hours=hour)
        return local.timestamp()

    out: list[Incident] = []
    used: set[str] = set()
    # A confirmed fire: two smoke alarms in one building, 40 s apart (GB 50116 4.1.6).
    smoke = [p for p in community.placed if "smoke" in p.device.model]
    by_building: dict[str | None, list[str]] = {}
    for p in smoke:
        by_building.setdefault(p.building, []).append(p.device.id)
    building = rng.choice(sorted(b for b, ids in by_building.items() if b and len(ids) >= 2))
    first, second = rng.sample(by_building[building], 2)
    used.update((first, second))
    t = at(0, 14.2)
    fire = Incident(
        "fire confirmed",
        t,
        first,
        "fire.confirmed",
        f"building:{community.id}/{building}",
        events=[
            (t, first, SimEvent(name="smoke_alarm", data={"value": 1})),
            (t + 40, second, SimEvent(name="smoke_alarm", data={"value": 1})),
        ],
    )
    out.append(fire)

    def device_incident(
        name: str, expect_rule: str, model_part: str, t: float, event: SimEvent | None = None
    ) -> Incident:
        """An incident at ``t`` on a device of ``model_part`` no other incident uses,
        raised against that device (with ``event`` from it at ``t``, if any)."""
        (placed,) = _pick(community, rng, model_part, used)
        device_id = placed.device.id
        incident = Incident(name, t, device_id, expect_rule, f"device:{device_id}")
        if event is not None:
            incident.events.append((t, device_id, event))
        out.append(incident)
        return incident

    device_incident(
        "SOS pressed",
        "wearable.sos",
        "care watch",
        at(1, 10.5),
        SimEvent(name="sos_pressed", data={"button": "side"}),
    )
    fall = device_incident(
        "fall at night",
        "wearable.fall",
        "care watch",
        at(2, 3.2),  # at night: no steps follow
        SimEvent(name="fall_detected", data={"confidence": 0.95}),
    )
    fall.metrics["steps"] = lambda _t: None  # keeps the last value: no movement
    device_incident(
        "door forced",
        "access.door_forced",
        "door controller",
        at(3, 2.5),
        SimEvent(name="door_forced", data={"door": "main"}),
    )
    gas = device_incident("gas leak", "fire.gas_stage1", "gas detector", at(4, 18.5))
    gas.metrics["gas_lel"] = _while(gas.at, gas.at + 1800, lambda _s: 27.0)
    link = device_incident(
        "fire sensor link lost", "device.offline", "residual current", at(5, 11.0)
    )
    link.silent = (link.at, link.at + 1800)
    link.will_at = link.at
    link.online_at = link.at + 1800
    dead = device_incident("watch goes silent", "device.offline", "care watch", at(6, 9.0))
    dead.silent = (dead.at, dead.at + 3 * 3600)
    fast = device_incident("clock 3 h fast", "device.clock_skew", "care watch", at(0, 8.0))
    fast.clock_ahead = (fast.at, fast.at + 4 * 3600, 3 * 3600.0)
    drained = device_incident(
        "watch battery runs down", "wearable.battery_low", "care watch", at(1, 7.0)
    )
    # 40 % falling 5 % an hour: below 20 % four hours later, recharged at 8 h.
    drained.within = 5 * 3600
    drained.metrics["battery"] = _while(
        drained.at, drained.at + 8 * 3600, lambda s: max(5.0, 40 - 5 * s / 3600)
    )
    return out


def run_week(
    *,
    devices: int = 2000,
    days: float = 7.0,
    seed: int = 1,
    operators: int = 1,
    rules: Sequence[Rule] | None = None,
    start: datetime | None = None,
    on_day: Callable[[int], None] | None = None,
) -> WeekReport:
    """Play ``days`` of a community of about ``devices`` devices; return the alarm report."""
    wall = time.monotonic()
    buildings = devices_per_building(devices)
    community = generate_community(f"week{seed}", buildings=buildings, seed=seed)
    tz = ZoneInfo(community.time_zone)
    t0 = (start or datetime(2026, 11, 30, tzinfo=tz)).timestamp()  # a Monday, 00:00 local
    end = t0 + days * 86_400
    rng = random.Random(f"{seed}/week")  # noqa: S311 - simulation, not secrets
    directory: dict[str, DeviceInfo] = {}
    fleet: dict[str, _Device] = {}
    for placed in community.placed:
        d = placed.device
        info = DeviceInfo(
            d.id,
            d.community_id,
            d.device_class,
            float(d.expected_interval_s),
            placed.building,
            community.time_zone,
        )
        directory[d.id] = info
        model = build_model(d, seed=seed, time_zone=tz, incident_scale=0.0)
        fleet[d.id] = _Device(info, model, float(d.expected_interval_s))
    incidents = _incidents(community, t0, days, seed)
    by_device: dict[str, list[Incident]] = {}
    for incident in incidents:
        for device_id in {incident.device_id} | {e[1] for e in incident.events}:
            by_device.setdefault(device_id, []).append(incident)

    engine = Engine(list(rules) if rules is not None else default_rules(), directory)
    state = EngineState()
    alarms: list[Alarm] = []
    open_: dict[tuple[str, str], Alarm] = {}
    dead: Counter[str] = Counter()
    messages = 0

    due: list[tuple[float, int, str]] = []
    order = 0
    for device_id, dev in fleet.items():
        due.append((t0 + rng.uniform(0, dev.interval), order, device_id))
        order += 1
    # Scripted events and statuses on the same queue as the reports.
    scripted: list[tuple[float, int, str, SimEvent | bool]] = []
    for incident in incidents:
        for t, device_id, event in incident.events:
            scripted.append((t, order, device_id, event))
            order += 1
        if incident.will_at is not None:
            scripted.append((incident.will_at, order, incident.device_id, False))
            order += 1
        if incident.online_at is not None:
            scripted.append((incident.online_at, order, incident.device_id, True))
            order += 1
    heapq.heapify(due)
    heapq.heapify(scripted)

    def apply(changes: list[AlertChange]) -> None:
        for change in changes:
            key = (change.rule_id, change.subject)
            current = open_.get(key)
            if change.kind is ChangeKind.RAISE:
                if current is not None:
                    current.occurrences += 1
                    continue
                alarm = Alarm(
                    change.rule_id,
                    change.subject,
                    change.severity.value,
                    change.at,
                    change.device_id,
                    change.rule.auto_resolve,
                )
                for incident in incidents:
                    if (
                        incident.expect_subject == change.subject
                        or incident.device_id == change.device_id
                    ) and incident.at - STEP_S <= change.at <= incident.at + incident.within:
                        alarm.incident = incident.name
                        if incident.found_at is None and incident.expect_rule == change.rule_id:
                            incident.found_at = change.at
                open_[key] = alarm
                alarms.append(alarm)
            elif current is not None:
                current.cleared_at = change.at
                if current.auto_resolve:
                    current.resolved_at = change.at
                    del open_[key]

    def send(
        items: list[tuple[str, list[Reading], DeviceEvent | None]],
        dev: _Device,
        channel: Channel,
        payload: bytes,
        received: datetime,
    ) -> None:
        """One message from ``dev``, validated as the pipeline would; what passes joins
        ``items``."""
        nonlocal messages
        dev.seq += 1
        messages += 1
        try:
            decoded = decode(dev.topic[channel], payload, received)
        except RejectedMessage as exc:
            dead[exc.reason.value] += 1
            return
        items.append((dev.info.device_id, decoded.readings, decoded.event))

    now = t0
    day = 0
    while now < end:
        now = min(now + STEP_S, end)
        items: list[tuple[str, list[Reading], DeviceEvent | None]] = []
        links: dict[str, tuple[bool, float]] = {}
        while scripted and scripted[0][0] <= now:
            t, _, device_id, what = heapq.heappop(scripted)
            dev = fleet[device_id]
            received = datetime.fromtimestamp(t, UTC)
            if isinstance(what, bool):
                links[device_id] = (what, t)
                continue
            ts_ms = max(int(t * 1000), dev.last_ms + 1)
            dev.last_ms = ts_ms
            send(
                items,
                dev,
                Channel.EVENT,
                event_payload(ts_ms=ts_ms, seq=dev.seq, event=what),
                received,
            )
        while due[0][0] <= now:
            t, n, device_id = due[0]
            dev = fleet[device_id]
            heapq.heapreplace(
                due, (t + dev.interval * rng.uniform(1 - JITTER, 1 + JITTER), n, device_id)
            )
            touched = by_device.get(device_id, [])
            if any(i.silent and i.silent[0] <= t < i.silent[1] for i in touched):
                continue
            at = datetime.fromtimestamp(t, UTC)
            sample = dev.model.sample(at)
            metrics = dict(sample.metrics)
            ahead = 0.0
            for hit in touched:
                for name, override in hit.metrics.items():
                    value = override(t)
                    if value is not None:
                        metrics[name] = value
                if hit.clock_ahead and hit.clock_ahead[0] <= t < hit.clock_ahead[1]:
                    ahead = hit.clock_ahead[2]
            ts_ms = max(int((t + ahead) * 1000), dev.last_ms + 1)
            dev.last_ms = ts_ms if ahead == 0 else dev.last_ms
            send(
                items,
                dev,
                Channel.TELEMETRY,
                telemetry_payload(ts_ms=ts_ms, seq=dev.seq, metrics=metrics),
                at,
            )
            for event in sample.events:
                ts_ms += 1
                send(
                    items,
                    dev,
                    Channel.EVENT,
                    event_payload(ts_ms=ts_ms, seq=dev.seq, event=event),
                    at,
                )
        if items or links:
            obs: Observations = observations(items, directory, engine.metrics)
            obs.links = links
            changes, state = engine.evaluate(obs, state, now)
            apply(changes)
        changes, state = engine.tick(state, now)
        apply(changes)
        # The operator: alerts that do not resolve themselves are handled.
        for key, alarm in list(open_.items()):
            if not alarm.auto_resolve and now - alarm.raised_at >= OPERATOR_RESOLVE_S:
                alarm.resolved_at = now
                del open_[key]
        if on_day is not None and int((now - t0) // 86_400) > day:
            day = int((now - t0) // 86_400)
            on_day(day)
    for incident in incidents:
        if incident.found_at is None:
            # Already open when the incident came (a watch left uncharged the night
            # before): the operator has the alarm in front of them, so it is found.
            for alarm in alarms:
                if (
                    alarm.rule_id == incident.expect_rule
                    and alarm.subject == incident.expect_subject
                    and alarm.raised_at <= incident.at + incident.within
                    and (alarm.resolved_at is None or alarm.resolved_at >= incident.at)
                ):
                    incident.found_at = max(alarm.raised_at, incident.at)
                    break
    return WeekReport(
        devices=len(fleet),
        buildings=buildings,
        days=days,
        operators=operators,
        messages=messages,
        dead_letters=dead,
        alarms=alarms,
        incidents=incidents,
        start=t0,
        wall_s=time.monotonic() - wall,
    )
