"""What every simulated device shares: a seeded generator, a clock passed in, checked output.

A model is stepped with the current time; it returns the telemetry it would
send now and the events that happened since its previous step. Output is
clamped to the metric catalogue's physical ranges, because the pipeline
dead-letters anything outside them.
"""

from __future__ import annotations

import math
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar
from zoneinfo import ZoneInfo

from core.metric_catalog import METRICS
from simulators.rhythm import busy_weight, chance

__all__ = ["COMMUNITY_TZ", "DeviceModel", "EventData", "Metrics", "Sample", "SimEvent"]

# The platform's default community time zone (STYLE.md: daily figures in Asia/Shanghai).
COMMUNITY_TZ = ZoneInfo("Asia/Shanghai")
# Same grammar the gateway enforces on event names.
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Metrics = dict[str, float]
EventData = Mapping[str, str | int | float | bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimEvent:
    name: str
    data: EventData = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _EVENT_NAME.match(self.name):
            raise ValueError(f"event name {self.name!r} is not lowercase snake_case")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    metrics: Metrics
    events: tuple[SimEvent, ...]


class DeviceModel(ABC):
    """Base of the four device classes; subclasses draw their personality in ``_setup``."""

    device_class: ClassVar[str]

    def __init__(
        self,
        *,
        device_id: str,
        seed: int,
        expected_interval_s: int,
        model: str = "",
        time_zone: ZoneInfo = COMMUNITY_TZ,
        incident_scale: float = 1.0,
    ) -> None:
        if expected_interval_s <= 0:
            raise ValueError("expected_interval_s must be positive")
        if incident_scale < 0:
            raise ValueError("incident_scale must not be negative")
        self.device_id = device_id
        self.model = model
        self.expected_interval_s = expected_interval_s
        self.time_zone = time_zone
        self.incident_scale = incident_scale
        # A string seed is hashed with SHA-512: stable across processes, unlike hash().
        self.rng = random.Random(f"{seed}/{device_id}")  # noqa: S311 - simulation, not secrets
        self._specs = METRICS[self.device_class]
        self._last: datetime | None = None
        self._setup()

    def sample(self, now: datetime) -> Sample:
        """Telemetry at ``now`` and the events since the previous call."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if self._last is None:
            dt_s = float(self.expected_interval_s)
        else:
            dt_s = max(0.0, (now - self._last).total_seconds())
        self._last = now
        metrics, events = self._step(now.astimezone(self.time_zone), dt_s)
        return Sample(metrics=self._checked(metrics), events=tuple(events))

    @abstractmethod
    def _setup(self) -> None:
        """Draw this device's fixed traits (baselines, home point) from ``self.rng``."""

    @abstractmethod
    def _step(self, local: datetime, dt_s: float) -> tuple[Metrics, list[SimEvent]]:
        """Advance ``dt_s`` seconds to ``local`` (community time) and read the sensors."""

    def _happens(self, per_day: float, dt_s: float, *, local: datetime | None = None) -> bool:
        """An incident at ``per_day`` times a day, times ``incident_scale``; with ``local``,
        following the residents' rhythm. Routine traffic (parcels, door passages) is not scaled.
        """
        rate = per_day * self.incident_scale
        if local is not None:
            rate *= busy_weight(local)
        return chance(self.rng, rate, dt_s)

    def _checked(self, metrics: Metrics) -> Metrics:
        for name, value in metrics.items():
            # KeyError here is a bug: the pipeline would refuse the metric.
            spec = self._specs[name]
            if not math.isfinite(value):
                raise ValueError(f"{self.device_id}: {name} is not finite")
            if value < spec.low:
                metrics[name] = spec.low
            elif value > spec.high:
                metrics[name] = spec.high
        return metrics
