"""An elderly resident's 4G care watch: vitals, steps, location, battery, wear state.

Rhythm: heart rate and SpO2 dip in sleep, wrist skin is warmest before dawn,
steps follow the day's activity and restart at local midnight, and most
evenings the watch comes off the wrist to charge (domain.md section 1.4).
"""

from __future__ import annotations

import math
from datetime import date, datetime

from simulators.model import DeviceModel, Metrics, SimEvent
from simulators.rhythm import activity, busy_weight, cosine_peak, hour_of_day, poisson

__all__ = ["WEARABLE_INTERVAL_S", "WEARABLE_MODEL", "WearableModel"]

WEARABLE_MODEL = "SC-W3 4G care watch"
# Vitals spot checks every 10 min: the short end of the 10-60 min watches use.
WEARABLE_INTERVAL_S = 600
# Default community centre (People's Square, Shanghai); homes scatter ~2 km around it.
HOME_CENTRE = (31.2304, 121.4737)
HOME_SPREAD_DEG = 0.02
METRES_PER_DEG_LAT = 111_320.0
# Daily walking of elderly residents, steps/day.
DAILY_STEPS_RANGE = (1_500.0, 7_000.0)
# ~2.5 days from full: a 4G watch reporting location every few minutes.
DRAIN_PCT_PER_H = 1.6
CHARGE_PCT_PER_H = 70.0
CHARGE_HOURS = 1.5
# Some evenings nobody puts the watch on the charger: the next day's low battery.
SKIPPED_CHARGE_CHANCE = 0.08
# Roughly one fall a year among the over-65s, plus the watch's false positives.
FALLS_PER_DAY = 0.004
SOS_PER_DAY = 0.002
GEOFENCE_EXITS_PER_DAY = 0.01
# How far and how long a wander outside the 500 m safe zone goes.
EXCURSION_M = (600.0, 1_500.0)
EXCURSION_S = (1_200.0, 5_400.0)
# Pottering around the block on an active morning stays well inside the zone.
LOCAL_WANDER_M = 250.0


class WearableModel(DeviceModel):
    device_class = "wearable"

    def _setup(self) -> None:
        rng = self.rng
        self._resting_hr = rng.uniform(58.0, 76.0)
        self._spo2_base = rng.uniform(95.5, 98.2)
        self._skin_base = rng.uniform(32.6, 33.8)
        self._daily_steps = rng.uniform(*DAILY_STEPS_RANGE)
        self._charge_hour = rng.uniform(19.0, 21.5)
        self._home = (
            HOME_CENTRE[0] + rng.uniform(-HOME_SPREAD_DEG, HOME_SPREAD_DEG),
            HOME_CENTRE[1] + rng.uniform(-HOME_SPREAD_DEG, HOME_SPREAD_DEG),
        )
        self._battery = rng.uniform(40.0, 100.0)
        self._steps = 0
        self._day: date | None = None
        self._charge_tonight = True
        self._excursion_left_s = 0.0
        self._excursion_m = 0.0

    def _step(self, local: datetime, dt_s: float) -> tuple[Metrics, list[SimEvent]]:
        rng = self.rng
        if local.date() != self._day:
            self._day = local.date()
            self._steps = 0
            self._charge_tonight = rng.random() >= SKIPPED_CHARGE_CHANCE
        hour = hour_of_day(local)
        charging = self._charge_tonight and (
            self._charge_hour <= hour < self._charge_hour + CHARGE_HOURS
        )
        worn = not charging
        act = activity(local)
        if charging:
            self._battery = min(100.0, self._battery + CHARGE_PCT_PER_H * dt_s / 3600)
        else:
            drain = DRAIN_PCT_PER_H * (0.8 + 0.4 * act)
            self._battery = max(0.0, self._battery - drain * dt_s / 3600)

        events: list[SimEvent] = []
        if self._excursion_left_s > 0:
            # Excursions end on their own clock, worn or not: the wanderer comes home.
            self._excursion_left_s -= dt_s
            if self._excursion_left_s <= 0:
                events.append(SimEvent(name="geofence_enter", data={"zone": "home"}))
        metrics: Metrics = {
            "battery": round(self._battery),
            "worn": int(worn),
            "rssi": round(rng.gauss(-85.0, 6.0)),
        }
        if worn:
            lam = self._daily_steps * busy_weight(local) * dt_s / 86_400
            self._steps += poisson(rng, lam)
            asleep = 1.0 - min(1.0, act * 4)
            metrics["heart_rate"] = round(
                self._resting_hr - 6 * asleep + 24 * act * rng.random() + rng.gauss(0, 2.5)
            )
            metrics["spo2"] = round(
                min(100.0, self._spo2_base - 0.8 * asleep + rng.gauss(0, 0.5)), 1
            )
            metrics["skin_temperature"] = round(
                self._skin_base + 0.8 * cosine_peak(local, peak_hour=4) + rng.gauss(0, 0.25), 1
            )
            events.extend(self._incidents(local, dt_s))
        metrics["steps"] = self._steps
        metrics["lat"], metrics["lon"] = self._position(act)
        return metrics, events

    def _incidents(self, local: datetime, dt_s: float) -> list[SimEvent]:
        rng = self.rng
        events: list[SimEvent] = []
        if self._happens(FALLS_PER_DAY, dt_s, local=local):
            events.append(
                SimEvent(
                    name="fall_detected", data={"confidence": round(rng.uniform(0.7, 0.99), 2)}
                )
            )
        if self._happens(SOS_PER_DAY, dt_s, local=local):
            events.append(SimEvent(name="sos_pressed", data={"button": "side"}))
        if self._excursion_left_s <= 0 and self._happens(GEOFENCE_EXITS_PER_DAY, dt_s, local=local):
            self._excursion_left_s = rng.uniform(*EXCURSION_S)
            self._excursion_m = rng.uniform(*EXCURSION_M)
            events.append(
                SimEvent(
                    name="geofence_exit",
                    data={"zone": "home", "distance_m": round(self._excursion_m)},
                )
            )
        return events

    def _position(self, act: float) -> tuple[float, float]:
        rng = self.rng
        if self._excursion_left_s > 0:
            distance = self._excursion_m
        else:
            distance = act * rng.uniform(0.0, LOCAL_WANDER_M)
        bearing = rng.uniform(0.0, 2 * math.pi)
        lat0, lon0 = self._home
        lat = lat0 + distance * math.cos(bearing) / METRES_PER_DEG_LAT
        lon = lon0 + distance * math.sin(bearing) / (
            METRES_PER_DEG_LAT * math.cos(math.radians(lat0))
        )
        return round(lat, 6), round(lon, 6)
