"""Daily rhythms and counting noise shared by the device models.

Everything takes the community's local time as an argument, never the wall
clock, so a test can walk a whole simulated day in milliseconds.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

__all__ = [
    "SECONDS_PER_DAY",
    "activity",
    "busy_weight",
    "chance",
    "cosine_peak",
    "crossed",
    "hour_of_day",
    "poisson",
]

SECONDS_PER_DAY = 86_400
# Knuth's product method is exact but costs O(lambda) draws; past 30 the normal
# approximation is within a count and costs the same at any lambda.
_POISSON_EXACT_MAX = 30.0
# Residents' activity: a morning bump (errands, exercise, couriers) centred
# 09:30, an afternoon/evening bump centred 17:30, and a floor for night owls.
_MORNING_HOUR, _MORNING_WIDTH_H = 9.5, 2.2
_EVENING_HOUR, _EVENING_WIDTH_H, _EVENING_HEIGHT = 17.5, 2.5, 0.8
_NIGHT_FLOOR = 0.03
# Mean of activity() over a day (the Gaussian integrals, the clamp at 1 barely
# bites): dividing by it turns "N per day" into a rate that follows the rhythm.
_ACTIVITY_MEAN = (_MORNING_WIDTH_H + _EVENING_HEIGHT * _EVENING_WIDTH_H) * math.sqrt(
    math.pi
) / 24 + _NIGHT_FLOOR


def hour_of_day(local: datetime) -> float:
    """Hours since local midnight, fractional."""
    return local.hour + local.minute / 60 + (local.second + local.microsecond / 1e6) / 3600


def cosine_peak(local: datetime, *, peak_hour: float) -> float:
    """1 at ``peak_hour``, -1 twelve hours away: the textbook circadian curve."""
    return math.cos(2 * math.pi * (hour_of_day(local) - peak_hour) / 24)


def activity(local: datetime) -> float:
    """How busy a residential community is, from about 0 (03:00) to 1 (late morning)."""
    hour = hour_of_day(local)
    morning = math.exp(-(((hour - _MORNING_HOUR) / _MORNING_WIDTH_H) ** 2))
    evening = _EVENING_HEIGHT * math.exp(-(((hour - _EVENING_HOUR) / _EVENING_WIDTH_H) ** 2))
    return min(1.0, morning + evening + _NIGHT_FLOOR)


def busy_weight(local: datetime) -> float:
    """activity() scaled to average 1 over a day: multiply a daily rate by it."""
    return activity(local) / _ACTIVITY_MEAN


def crossed(local: datetime, dt_s: float, *, at_hour: float) -> bool:
    """Whether local time passed ``at_hour`` during the ``dt_s`` seconds that end at ``local``."""
    if dt_s >= SECONDS_PER_DAY:
        return True
    since = (hour_of_day(local) - at_hour) % 24
    return since < dt_s / 3600


def chance(rng: random.Random, per_day: float, dt_s: float) -> bool:
    """One draw of a Poisson process with ``per_day`` events a day over ``dt_s`` seconds."""
    if per_day <= 0 or dt_s <= 0:
        return False
    return rng.random() < -math.expm1(-per_day * dt_s / SECONDS_PER_DAY)


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson count with mean ``lam`` (random.Random has none)."""
    if lam <= 0:
        return 0
    if lam > _POISSON_EXACT_MAX:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count
