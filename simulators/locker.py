"""A smart parcel locker bank with a refrigerated compartment.

Couriers deposit through the day, residents collect mostly in the evening,
a few parcels sit past the free-storage period (overdue), the compressor
holds the cold compartment around its set-point, and now and then the mains
fails and the backup battery carries the cabinet (domain.md section 1.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from simulators.model import DeviceModel, EventData, Metrics, SimEvent
from simulators.rhythm import activity, busy_weight, cosine_peak, poisson

__all__ = ["LOCKER_INTERVAL_S", "LOCKER_MODEL", "LockerModel"]

LOCKER_MODEL = "SC-LK48 smart parcel locker"
# Cabinet status every 5 min: inside the 1-10 min lockers use.
LOCKER_INTERVAL_S = 300
COMPARTMENT_CHOICES = (24, 36, 48, 60, 72)
# Parcels a day per compartment; a busy bank turns over about half its boxes daily.
DEPOSITS_PER_COMPARTMENT_DAY = 0.5
# Hours until pickup: most within the evening, some much later.
PICKUP_MEAN_H = 6.0
LATE_PICKUP_SHARE = 0.08
LATE_PICKUP_H = (24.0, 60.0)
# Free storage commonly ends at 24 h; after that a parcel counts as overdue.
OVERDUE_S = 24 * 3600
# (set-point, compressor swing) in degC: chilled +5 / frozen -18 (MainBox study).
COLD_PROFILES = ((5.0, 1.5), (-18.0, 3.0))
COMPRESSOR_CYCLE_S = 1_800.0
OUTAGES_PER_DAY = 0.01
OUTAGE_S = (600.0, 3_600.0)
UPS_DRAIN_PCT_PER_H = 25.0
UPS_CHARGE_PCT_PER_H = 20.0
DOORS_LEFT_OPEN_PER_DAY = 0.05
FORCED_PER_DAY = 0.002
# A compartment door stands open ~20 s per transaction.
DOOR_OPEN_S = 20.0
PICKUP_METHODS = ("code", "qr", "face")
PARCEL_SIZES = ("S", "M", "L")


@dataclass(slots=True, kw_only=True)
class _Parcel:
    compartment: int
    deposited_at: float
    due_at: float


class LockerModel(DeviceModel):
    device_class = "locker"

    def _setup(self) -> None:
        rng = self.rng
        self._compartments = rng.choice(COMPARTMENT_CHOICES)
        self._setpoint, self._swing = COLD_PROFILES[0] if rng.random() < 0.7 else COLD_PROFILES[1]
        self._phase = rng.uniform(0.0, 2 * math.pi)
        self._parcels: list[_Parcel] = []
        self._outage_left_s = 0.0
        self._door_stuck_left_s = 0.0
        self._battery = 100.0

    def _step(self, local: datetime, dt_s: float) -> tuple[Metrics, list[SimEvent]]:
        rng = self.rng
        now = local.timestamp()
        events = self._pickups(local, now) + self._deposits(local, now, dt_s)
        # A snapshot: the chance that a transaction of this step is under way at the
        # instant of the sample, whatever the step's length (a 5 min report or an
        # hour of replayed history).
        open_share = min(1.0, DOOR_OPEN_S / dt_s) if dt_s > 0 else 0.0
        doors_open = sum(rng.random() < open_share for _ in events)
        if self._happens(FORCED_PER_DAY, dt_s):
            events.append(
                SimEvent(
                    name="door_forced", data={"compartment": rng.randint(1, self._compartments)}
                )
            )
            doors_open += 1
        if self._door_stuck_left_s > 0:
            self._door_stuck_left_s -= dt_s
            doors_open += 1
        elif self._happens(DOORS_LEFT_OPEN_PER_DAY, dt_s, local=local):
            self._door_stuck_left_s = rng.uniform(300.0, 1_800.0)
            doors_open += 1

        if self._outage_left_s > 0:
            self._outage_left_s -= dt_s
        elif self._happens(OUTAGES_PER_DAY, dt_s):
            self._outage_left_s = rng.uniform(*OUTAGE_S)
        mains = self._outage_left_s <= 0
        if mains:
            self._battery = min(100.0, self._battery + UPS_CHARGE_PCT_PER_H * dt_s / 3600)
        else:
            self._battery = max(0.0, self._battery - UPS_DRAIN_PCT_PER_H * dt_s / 3600)

        cycle = math.sin(2 * math.pi * now / COMPRESSOR_CYCLE_S + self._phase)
        temperature = (
            self._setpoint
            + self._swing * cycle
            + 0.5 * cosine_peak(local, peak_hour=15)  # warm afternoons load the compressor
            + 0.3 * doors_open
            + rng.gauss(0.0, 0.2)
        )
        overdue = sum(now - parcel.deposited_at > OVERDUE_S for parcel in self._parcels)
        metrics: Metrics = {
            "temperature": round(temperature, 1),
            "occupied": len(self._parcels),
            "compartments": self._compartments,
            "door_open": doors_open,
            "mains_power": int(mains),
            "overdue": overdue,
            "battery": round(self._battery),
            "rssi": round(rng.gauss(-75.0, 5.0)),
        }
        return metrics, events

    def _deposits(self, local: datetime, now: float, dt_s: float) -> list[SimEvent]:
        rng = self.rng
        per_day = DEPOSITS_PER_COMPARTMENT_DAY * self._compartments
        count = poisson(rng, per_day * busy_weight(local) * dt_s / 86_400)
        taken = {parcel.compartment for parcel in self._parcels}
        free = [n for n in range(1, self._compartments + 1) if n not in taken]
        events: list[SimEvent] = []
        for compartment in rng.sample(free, min(count, len(free))):
            if rng.random() < LATE_PICKUP_SHARE:
                wait_h = rng.uniform(*LATE_PICKUP_H)
            else:
                wait_h = rng.expovariate(1 / PICKUP_MEAN_H)
            self._parcels.append(
                _Parcel(compartment=compartment, deposited_at=now, due_at=now + wait_h * 3600)
            )
            size = rng.choice(PARCEL_SIZES)
            events.append(
                SimEvent(name="parcel_deposited", data={"compartment": compartment, "size": size})
            )
        return events

    def _pickups(self, local: datetime, now: float) -> list[SimEvent]:
        rng = self.rng
        # Residents whose parcel is waiting come by when they are up and about.
        come_by = min(1.0, 0.1 + activity(local))
        events: list[SimEvent] = []
        kept: list[_Parcel] = []
        for parcel in self._parcels:
            if parcel.due_at <= now and rng.random() < come_by:
                method = rng.choice(PICKUP_METHODS)
                data: EventData = {"compartment": parcel.compartment, "method": method}
                events.append(SimEvent(name="parcel_picked_up", data=data))
            else:
                kept.append(parcel)
        self._parcels = kept
        return events
