"""Community fire-safety sensors: one sensor kind per device, picked by its model name.

Normal readings follow the day (indoor temperature peaks mid-afternoon,
electrical leakage with the evening load, water pressure sags while people
draw water); rarely an incident drives the reading to alarm level for a few
minutes, announced by the kind's alarm event and ended by ``alarm_cleared``.
Values and thresholds: domain.md sections 1.1 and 5.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from simulators.model import DeviceModel, Metrics, SimEvent
from simulators.rhythm import activity, cosine_peak, crossed

__all__ = ["FIRE_KINDS", "FireKind", "FireModel", "fire_kind_for_metrics", "fire_kind_for_model"]


@dataclass(frozen=True, slots=True)
class FireKind:
    key: str
    model: str
    metric: str
    interval_s: int
    alarm_event: str
    # Share of a community's fire devices that are of this kind.
    weight: float


FIRE_KINDS: dict[str, FireKind] = {
    kind.key: kind
    for kind in (
        # key, model, metric, interval_s, alarm_event, weight.
        # NB-IoT smoke alarms: an hourly heartbeat, alarms the moment they trip.
        FireKind(
            "smoke", "SC-SD200 NB-IoT smoke alarm", "smoke_obscuration", 3600, "smoke_alarm", 0.40
        ),
        FireKind("heat", "SC-HD110 heat detector A1R", "temperature", 300, "heat_alarm", 0.10),
        FireKind("gas", "SC-GD15 combustible gas detector", "gas_lel", 300, "gas_alarm", 0.15),
        FireKind(
            "residual_current",
            "SC-EF300 residual current monitor",
            "residual_current",
            120,
            "leakage_alarm",
            0.10,
        ),
        FireKind(
            "hydrant", "SC-HP16 hydrant pressure gauge", "pipe_pressure", 900, "low_pressure", 0.10
        ),
        FireKind("tank", "SC-TL05 fire tank level sensor", "tank_level", 600, "low_level", 0.05),
        FireKind(
            "extinguisher",
            "SC-EX4 smart extinguisher gauge",
            "extinguisher_pressure",
            3600,
            "extinguisher_discharged",
            0.10,
        ),
    )
}
_BY_MODEL = {kind.model: kind for kind in FIRE_KINDS.values()}
# Kinds without mains power report a battery (smoke alarms as a voltage).
_BATTERY_PCT_KINDS = frozenset({"heat", "hydrant", "tank", "extinguisher"})
# Real incidents plus nuisance alarms (cooking smoke, a tripping circuit): about
# two a year per device, so the ~300 fire sensors of a 1,000-device community
# raise one or two a day, well inside a control room's alarm budget.
ALARMS_PER_DAY = 0.005
FAULTS_PER_DAY = 0.002
FAULT_CODES = ("sensor_fault", "low_battery", "communication_fault", "dirty_chamber")
# An incident keeps the reading at alarm level this long, in seconds.
INCIDENT_S = (300.0, 1_200.0)
# Li-SOCl2 primary cells sit near 3.6 V for years; ~0.1 V a year of slow fade.
BATTERY_V_FADE_PER_S = 0.1 / (365 * 86_400)
# Battery-powered gauges last ~3 years (fire-IoT standard expectation).
BATTERY_PCT_FADE_PER_S = 100.0 / (3 * 365 * 86_400)


def fire_kind_for_model(model: str) -> FireKind | None:
    return _BY_MODEL.get(model)


def fire_kind_for_metrics(metrics: Collection[str]) -> FireKind | None:
    """The first kind whose measurement is one of ``metrics`` (what a product can post)."""
    return next((kind for kind in FIRE_KINDS.values() if kind.metric in metrics), None)


class FireModel(DeviceModel):
    device_class = "fire"

    def _setup(self) -> None:
        rng = self.rng
        kinds = list(FIRE_KINDS.values())
        self.kind = (
            fire_kind_for_model(self.model)
            or rng.choices(kinds, weights=[kind.weight for kind in kinds])[0]
        )
        # Per-device baselines; each kind reads only the ones it needs.
        self._ambient = rng.uniform(19.0, 25.0)
        self._leak_ma = rng.uniform(25.0, 120.0)
        self._pressure = rng.uniform(0.16, 0.32)  # MPa: above the 0.10-0.15 design minima
        self._tank_height = rng.uniform(3.0, 6.0)
        self._tank_fill = rng.uniform(0.88, 0.97)
        self._ext_pressure = rng.uniform(1.1, 1.3)  # MPa: dry-powder green zone 1.0-1.4
        self._battery_v = rng.uniform(3.55, 3.66)
        self._battery_pct = rng.uniform(50.0, 100.0)
        self._self_test_hour = rng.uniform(0.0, 24.0)
        self._incident_left_s = 0.0
        self._incident_level = 0.0

    def _step(self, local: datetime, dt_s: float) -> tuple[Metrics, list[SimEvent]]:
        rng = self.rng
        events: list[SimEvent] = []
        starting = False
        if self._incident_left_s > 0:
            self._incident_left_s -= dt_s
            if self._incident_left_s <= 0:
                events.append(SimEvent(name="alarm_cleared", data={"alarm": self.kind.alarm_event}))
        elif self._happens(ALARMS_PER_DAY, dt_s):
            self._incident_left_s = rng.uniform(*INCIDENT_S)
            self._incident_level = rng.random()
            starting = True
        value = self._reading(local, self._incident_left_s > 0)
        if starting:
            events.append(SimEvent(name=self.kind.alarm_event, data={"value": value}))
        metrics: Metrics = {self.kind.metric: value, "rssi": round(rng.gauss(-90.0, 8.0))}
        self._battery_v -= BATTERY_V_FADE_PER_S * dt_s
        self._battery_pct = max(0.0, self._battery_pct - BATTERY_PCT_FADE_PER_S * dt_s)
        if self.kind.key == "smoke":
            metrics["battery_v"] = round(self._battery_v + rng.gauss(0.0, 0.005), 2)
        elif self.kind.key in _BATTERY_PCT_KINDS:
            metrics["battery"] = round(self._battery_pct)
        if self._happens(FAULTS_PER_DAY, dt_s):
            events.append(SimEvent(name="fault", data={"code": rng.choice(FAULT_CODES)}))
        if crossed(local, dt_s, at_hour=self._self_test_hour):
            # GB 20517: the detector checks itself (and its battery) at least daily.
            events.append(SimEvent(name="self_test", data={"result": "pass"}))
        return metrics, events

    def _reading(self, local: datetime, alarm: bool) -> float:
        """The kind's one measurement; at alarm level while an incident lasts."""
        rng = self.rng
        level = self._incident_level
        key = self.kind.key
        if key == "smoke":  # %/m; clean air reads near zero, alarms trip around 3-4 %/m
            value = 3.5 + 8.5 * level if alarm else max(0.0, rng.gauss(0.05, 0.03))
            return round(value, 2)
        if key == "heat":  # degC; EN 54-5 class A1 responds at 54-65 degC
            normal = self._ambient + 3.0 * cosine_peak(local, peak_hour=15) + rng.gauss(0, 0.3)
            return round(58.0 + 17.0 * level if alarm else normal, 1)
        if key == "gas":  # %LEL; cooking at meal times barely registers
            meal = max(cosine_peak(local, peak_hour=12), cosine_peak(local, peak_hour=18.5))
            normal = max(0.0, 0.4 * max(0.0, meal) ** 8 + abs(rng.gauss(0.0, 0.15)))
            return round(20.0 + 25.0 * level if alarm else normal, 1)
        if key == "residual_current":  # mA; alarm setting 300-500 mA (GB 50116 9.2.3)
            load = 0.75 + 0.35 * cosine_peak(local, peak_hour=20)
            return round(320.0 + 280.0 * level if alarm else self._leak_ma * load + rng.gauss(0, 4))
        if key == "hydrant":  # MPa; people drawing water in the day lowers it a little
            normal = self._pressure - 0.02 * activity(local) + rng.gauss(0, 0.003)
            return round(self._pressure * (0.2 + 0.3 * level) if alarm else normal, 3)
        if key == "tank":  # m; monitor only, a leak or a fire draw lowers it
            normal = self._tank_height * self._tank_fill + rng.gauss(0, 0.003)
            return round(self._tank_height * (0.3 + 0.3 * level) if alarm else normal, 3)
        # extinguisher, MPa; the gas warms with the room (~0.3 % per degC)
        normal = self._ext_pressure * (1 + 0.01 * cosine_peak(local, peak_hour=15))
        return round(0.1 + 0.4 * level if alarm else normal + rng.gauss(0, 0.003), 3)
