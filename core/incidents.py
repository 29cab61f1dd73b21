"""Incidents: what an alert becomes when people have to go. Pure; the clock is passed in.

An incident groups the alerts of one building (the pre-alarm, the confirmed fire,
the door forced open) and walks the stages raised -> acknowledged -> dispatched ->
accepted -> on scene -> resolved. Targets are seconds from the incident's opening
(the micro fire station's "3 minutes to the scene" is ``arrival_s`` = 180 for a
fire), except ``accept_s``: how long one dispatched responder has to accept before
the next is called. A missed target escalates along the ladder: the next person on
the roster, then the team leader, then the street-level control room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.response_figures import percentile

__all__ = [
    "CONTROL_ROOM",
    "DEFAULT_TARGETS",
    "GROUP_WINDOW",
    "MAX_TARGET_S",
    "Deadline",
    "IncidentRecord",
    "IncidentType",
    "Stage",
    "TargetKind",
    "Targets",
    "classify",
    "deadlines",
    "due_targets",
    "incident_figures",
    "next_on_ladder",
    "target_problems",
]

# Alerts of one building this close together are one happening (a pre-alarm and the
# fire it turns into are seconds to minutes apart).
GROUP_WINDOW = timedelta(minutes=30)
# The last rung of the ladder: not a responder but the street's control room.
CONTROL_ROOM = "control_room"


class IncidentType(StrEnum):
    FIRE = "fire"
    SOS = "sos"
    INTRUSION = "intrusion"
    OTHER = "other"


# Which type wins when an incident groups several: a fire outranks everything.
_PRIORITY = [IncidentType.FIRE, IncidentType.SOS, IncidentType.INTRUSION, IncidentType.OTHER]


def stronger(a: IncidentType, b: IncidentType) -> IncidentType:
    return a if _PRIORITY.index(a) <= _PRIORITY.index(b) else b


class Stage(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"


STAGES = list(Stage)


class TargetKind(StrEnum):
    ACK = "ack"
    DISPATCH = "dispatch"
    ARRIVAL = "arrival"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class Targets:
    ack_s: int
    dispatch_s: int
    accept_s: int
    arrival_s: int
    resolve_s: int

    def seconds(self, kind: TargetKind) -> int:
        return int(getattr(self, f"{kind.value}_s"))


# domain.md's 1-3-5 chain: on-site unit within 1 min, joint team on scene within 3.
# SOS: a care worker living nearby within 10 min; intrusion: a guard within 5.
DEFAULT_TARGETS: dict[IncidentType, Targets] = {
    IncidentType.FIRE: Targets(ack_s=60, dispatch_s=60, accept_s=60, arrival_s=180, resolve_s=3600),
    IncidentType.SOS: Targets(ack_s=60, dispatch_s=120, accept_s=90, arrival_s=600, resolve_s=3600),
    IncidentType.INTRUSION: Targets(
        ack_s=120, dispatch_s=180, accept_s=90, arrival_s=300, resolve_s=3600
    ),
    IncidentType.OTHER: Targets(
        ack_s=300, dispatch_s=900, accept_s=300, arrival_s=1800, resolve_s=86400
    ),
}


@dataclass(frozen=True, slots=True)
class Deadline:
    target: str
    seconds: int
    due_at: datetime
    met_at: datetime | None


def deadlines(targets: Targets, progress: Progress) -> list[Deadline]:
    """Each target's due time from the opening, and when it was met (an acknowledgement
    is met by a dispatch too)."""
    out = []
    for name, seconds, met in (
        ("ack", targets.ack_s, progress.acknowledged_at or progress.dispatched_at),
        ("dispatch", targets.dispatch_s, progress.dispatched_at),
        ("arrival", targets.arrival_s, progress.arrived_at),
        ("resolve", targets.resolve_s, progress.resolved_at),
    ):
        due = progress.opened_at + timedelta(seconds=seconds)
        out.append(Deadline(target=name, seconds=seconds, due_at=due, met_at=met))
    return out


# A target longer than a month is no target (and keeps the seconds in an integer).
MAX_TARGET_S = 30 * 86400


def target_problems(targets: Targets) -> list[str]:
    """Why these targets cannot be kept, or nothing. Each is counted from the incident's
    opening, so they come in the order of the stages; ``accept_s`` (one responder's time
    to accept) must leave room to arrive."""
    problems = [
        f"{name} must be 1 to {MAX_TARGET_S} seconds"
        for name in ("ack_s", "dispatch_s", "accept_s", "arrival_s", "resolve_s")
        if not 0 < getattr(targets, name) <= MAX_TARGET_S
    ]
    order = [
        ("ack_s", targets.ack_s, "dispatch_s", targets.dispatch_s),
        ("dispatch_s", targets.dispatch_s, "arrival_s", targets.arrival_s),
        ("accept_s", targets.accept_s, "arrival_s", targets.arrival_s),
        ("arrival_s", targets.arrival_s, "resolve_s", targets.resolve_s),
    ]
    problems += [f"{a} must not exceed {b}" for a, va, b, vb in order if va > vb]
    return problems


def classify(rule_id: str, device_class: str | None) -> IncidentType:
    """An alert's incident type from its rule and device class."""
    if rule_id.startswith("fire.") or device_class == "fire":
        return IncidentType.FIRE
    if rule_id in ("wearable.sos", "wearable.fall"):
        return IncidentType.SOS
    if rule_id == "access.door_forced":
        return IncidentType.INTRUSION
    return IncidentType.OTHER


def auto_dispatches(rule_id: str, severity: str) -> bool:
    """A confirmed fire (two detectors: the correlation rule at critical) and an SOS
    send people at once; everything else waits for an operator."""
    if rule_id == "fire.confirmed":
        return severity == "critical"
    return rule_id == "wearable.sos"


@dataclass(frozen=True, slots=True)
class Progress:
    """An incident's times, as far as they go."""

    opened_at: datetime
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None


def due_targets(
    p: Progress, targets: Targets, now: datetime, done: Sequence[str]
) -> list[TargetKind]:
    """Targets missed by ``now`` and not yet escalated for (``done``). A missed
    acknowledgement is not escalated once people are on their way (an automatic
    dispatch): the figures still count it late."""
    reached = {
        TargetKind.ACK: p.acknowledged_at,
        TargetKind.DISPATCH: p.dispatched_at,
        TargetKind.ARRIVAL: p.arrived_at,
        TargetKind.RESOLVE: p.resolved_at,
    }
    if p.resolved_at is not None:
        return []
    if p.dispatched_at is not None:
        reached[TargetKind.ACK] = p.dispatched_at
    return [
        kind
        for kind, at in reached.items()
        if at is None
        and kind.value not in done
        and now >= p.opened_at + timedelta(seconds=targets.seconds(kind))
    ]


def next_on_ladder(roster: Sequence[str], leader: str | None, called: Sequence[str]) -> str:
    """Whom an escalation calls: the next on the roster not yet called, then the team
    leader, then the control room (``CONTROL_ROOM``)."""
    for responder in roster:
        if responder not in called:
            return responder
    if leader is not None and leader not in called:
        return leader
    return CONTROL_ROOM


# --- figures ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    incident_type: str
    opened_at: datetime
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    arrived_at: datetime | None
    resolved_at: datetime | None
    arrival_target_s: float
    escalations: int


@dataclass(frozen=True, slots=True)
class PhaseFigures:
    count: int
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True, slots=True)
class IncidentFigures:
    incidents: int
    by_type: dict[str, int]
    acknowledge: PhaseFigures
    dispatch: PhaseFigures
    arrive: PhaseFigures
    resolve: PhaseFigures
    arrived_within_target: int
    # Over incidents someone arrived at or should have by now (arrival target passed).
    arrival_within_target_share: float | None
    escalations: int


def _phase(values: list[float]) -> PhaseFigures:
    return PhaseFigures(len(values), percentile(values, 50), percentile(values, 90))


def incident_figures(records: Sequence[IncidentRecord], now: datetime) -> IncidentFigures:
    """Times from opening to each stage, median and 90th percentile (linear
    interpolation, as the alert figures); the share arriving within target counts
    incidents not yet reached whose target has passed as misses."""
    by_type: dict[str, int] = {}
    phases: dict[str, list[float]] = {"ack": [], "dispatch": [], "arrive": [], "resolve": []}
    within = judged = escalations = 0
    for r in records:
        by_type[r.incident_type] = by_type.get(r.incident_type, 0) + 1
        escalations += r.escalations
        for name, at in (
            ("ack", r.acknowledged_at),
            ("dispatch", r.dispatched_at),
            ("arrive", r.arrived_at),
            ("resolve", r.resolved_at),
        ):
            if at is not None:
                phases[name].append(max((at - r.opened_at).total_seconds(), 0.0))
        deadline = r.opened_at + timedelta(seconds=r.arrival_target_s)
        if r.arrived_at is not None:
            judged += 1
            within += r.arrived_at <= deadline
        elif now >= deadline:
            judged += 1
    return IncidentFigures(
        incidents=len(records),
        by_type={k: by_type[k] for k in sorted(by_type)},
        acknowledge=_phase(phases["ack"]),
        dispatch=_phase(phases["dispatch"]),
        arrive=_phase(phases["arrive"]),
        resolve=_phase(phases["resolve"]),
        arrived_within_target=within,
        arrival_within_target_share=within / judged if judged else None,
        escalations=escalations,
    )
