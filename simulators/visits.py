"""A month of care visits to rehearse the visit rate and the service report with.

Pure generation from a seed (the CLI, ``smartcommunity visits simulate``, writes it):

- residents in the visit programme, most monthly, some weekly (living alone with
  cognitive impairment);
- workers, one per ``RESIDENTS_PER_WORKER``, who work Monday to Friday 09:00-17:00
  local time and spread their monthly residents over the month's working days;
  weekly residents are seen on the same weekday every week;
- some residents are never scheduled (``miss_share``: the overdue list), some
  are not at home (tried again two working days later), some need follow-up
  (visited again about a week later);
- the month's alerts, with realistic times to acknowledge and to resolve, for
  the service figures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from core.visits import Month, Outcome, Policy
from simulators.population import SURNAMES

__all__ = [
    "RESIDENTS_PER_WORKER",
    "SimAlert",
    "SimResident",
    "SimVisit",
    "month_alerts",
    "month_visits",
    "programme",
]

# A community worker looks after about 50 elderly residents (city plans: 1:40-1:60).
RESIDENTS_PER_WORKER = 50
WEEKLY_SHARE = 0.12
NOT_AT_HOME_SHARE = 0.06
FOLLOW_UP_SHARE = 0.08
VISIT_MINUTES = (20, 45)
# The population's surnames and a few more (a seed draws from this list as it is).
_SURNAMES = (*SURNAMES, "Hu", "Zhu", "Gao", "Lin", "He", "Guo", "Ma")
_GIVEN = [
    "Guilan",
    "Shuzhen",
    "Jianguo",
    "Xiuying",
    "Guoqiang",
    "Yulan",
    "Fengying",
    "Jianhua",
    "Lihua",
    "Deming",
]


@dataclass(frozen=True, slots=True)
class SimResident:
    id: str
    name: str
    policy: Policy
    vulnerabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SimVisit:
    resident_id: str
    worker: str
    started_at: datetime
    ended_at: datetime
    outcome: Outcome
    notes: str


@dataclass(frozen=True, slots=True)
class SimAlert:
    alert_class: str
    severity: str
    raised_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None


def programme(community_id: str, count: int, seed: int = 0) -> list[SimResident]:
    rng = random.Random(f"{seed}/programme")  # noqa: S311 - simulation, not secrets
    out = []
    for i in range(1, count + 1):
        weekly = rng.random() < WEEKLY_SHARE
        out.append(
            SimResident(
                id=f"{community_id}-r{i:04d}",
                name=f"{rng.choice(_SURNAMES)} {rng.choice(_GIVEN)}",
                policy=Policy.WEEKLY if weekly else Policy.MONTHLY,
                vulnerabilities=("cognitive_impairment", "lives_alone") if weekly else (),
            )
        )
    return out


def _working_days(month: Month) -> list[date]:
    day, out = month.first_day, []
    while day <= month.last_day:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


def month_visits(
    residents: list[SimResident],
    month: Month,
    tz: ZoneInfo,
    *,
    seed: int = 0,
    miss_share: float = 0.04,
    until: datetime | None = None,
) -> list[SimVisit]:
    """The month's visits (those starting before ``until``, when given), by start time."""
    rng = random.Random(f"{seed}/{month}/visits")  # noqa: S311 - simulation, not secrets
    days = _working_days(month)
    workers = [
        f"worker-{i + 1:02d}" for i in range(max(1, -(-len(residents) // RESIDENTS_PER_WORKER)))
    ]
    visits: list[SimVisit] = []

    def visit(resident: SimResident, worker: str, day: date, retry: int = 0) -> None:
        start_local = datetime.combine(day, time(9), tzinfo=tz) + timedelta(
            minutes=rng.randrange(0, 7 * 60)
        )
        roll = rng.random()
        if roll < NOT_AT_HOME_SHARE and retry < 2:
            outcome, notes = Outcome.NOT_AT_HOME, "no answer at the door"
        elif roll < NOT_AT_HOME_SHARE + FOLLOW_UP_SHARE and retry == 0:
            outcome, notes = Outcome.NEEDS_FOLLOW_UP, "ran out of medicine; call the clinic"
        else:
            outcome, notes = Outcome.WELL, ""
        length = timedelta(minutes=rng.randint(*VISIT_MINUTES))
        visits.append(
            SimVisit(resident.id, worker, start_local, start_local + length, outcome, notes)
        )
        later = [d for d in days if d > day]
        if outcome is Outcome.NOT_AT_HOME and len(later) >= 2:
            visit(resident, worker, later[1], retry + 1)
        elif outcome is Outcome.NEEDS_FOLLOW_UP and len(later) >= 5:
            visit(resident, worker, later[4], retry + 1)

    for index, resident in enumerate(residents):
        worker = workers[index % len(workers)]
        if rng.random() < miss_share:
            continue  # never scheduled: the overdue list
        if resident.policy is Policy.WEEKLY:
            weekday = rng.randrange(5)
            for day in days:
                if day.weekday() == weekday:
                    visit(resident, worker, day)
        else:
            visit(resident, worker, days[rng.randrange(len(days))])
    if until is not None:
        visits = [v for v in visits if v.started_at < until]
    return sorted(visits, key=lambda v: (v.started_at, v.resident_id))


# Alerts a 300-resident community sees in a month, by (class, severity): count.
ALERT_MIX = {
    ("fire", "critical"): 3,
    ("fire", "major"): 6,
    ("fire", "warning"): 10,
    ("wearable", "critical"): 12,
    ("wearable", "major"): 25,
    ("wearable", "warning"): 40,
    ("access", "minor"): 15,
    ("locker", "warning"): 20,
}


def month_alerts(
    month: Month, tz: ZoneInfo, *, seed: int = 0, scale: float = 1.0
) -> list[SimAlert]:
    """The month's alerts and how the control room answered them: critical ones within
    a minute or two, warnings within the hour; a few never acknowledged."""
    rng = random.Random(f"{seed}/{month}/alerts")  # noqa: S311 - simulation, not secrets
    start, end = month.bounds(tz)
    span = (end - start).total_seconds()
    out = []
    for (cls, severity), count in ALERT_MIX.items():
        for _ in range(max(1, round(count * scale))):
            raised = start + timedelta(seconds=rng.uniform(0, span - 86400))
            urgent = severity in ("critical", "major")
            ack_s = rng.lognormvariate(4.3, 0.6) if urgent else rng.lognormvariate(6.5, 0.8)
            acked = None if rng.random() < 0.03 else raised + timedelta(seconds=ack_s)
            resolve_s = ack_s + rng.lognormvariate(7.5, 0.7)
            resolved = None if acked is None else raised + timedelta(seconds=resolve_s)
            out.append(SimAlert(cls, severity, raised, acked, resolved))
    return sorted(out, key=lambda a: a.raised_at)
