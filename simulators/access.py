"""A door or gate access controller: reader, door contact, tamper switch, backup battery.

Passages follow the residents' day; a few percent of attempts are denied;
rarely a door is held open or forced, and a forced door sometimes comes
with a tamper signal (the intrusion pattern rules look for; domain.md 1.3).
"""

from __future__ import annotations

from datetime import datetime

from simulators.model import DeviceModel, EventData, Metrics, SimEvent
from simulators.rhythm import busy_weight, poisson

__all__ = ["ACCESS_INTERVAL_S", "ACCESS_MODEL", "AccessModel"]

ACCESS_MODEL = "SC-AC20 door controller"
# Heartbeat with the door's state every 5 min; events go out as they happen.
ACCESS_INTERVAL_S = 300
# Passages a day at one door: a side door of a block up to a busy main gate.
PASSAGES_PER_DAY = (80.0, 600.0)
# Expired cards, visitors outside their window, wrong faces.
DENIED_SHARE = 0.03
# A door stands open ~5 s per passage.
OPEN_S_PER_PASSAGE = 5.0
HELD_OPEN_PER_DAY = 0.3
FORCED_PER_DAY = 0.003
TAMPER_WITH_FORCE_SHARE = 0.3
TAMPER_PER_DAY = 0.002
TAMPER_S = (300.0, 1_800.0)
# Wireless locks run a year or two on a pack; mains controllers float near full.
WIRELESS_DRAIN_PCT_PER_H = 0.008
WIRELESS_SHARE = 0.4
CREDENTIALS = ("card", "face", "qr", "pin")
CREDENTIAL_WEIGHTS = (0.5, 0.3, 0.15, 0.05)
DENIAL_REASONS = ("unknown_credential", "expired", "outside_schedule", "anti_passback")
GATES = ("north-gate", "south-gate", "east-gate", "west-gate", "garage")


class AccessModel(DeviceModel):
    device_class = "access"

    def _setup(self) -> None:
        rng = self.rng
        self._passages = rng.uniform(*PASSAGES_PER_DAY)
        if rng.random() < 0.3:
            self._door = rng.choice(GATES)
        else:
            self._door = f"bldg-{rng.randint(1, 30)}-unit-{rng.randint(1, 4)}"
        self._wireless = rng.random() < WIRELESS_SHARE
        self._battery = rng.uniform(30.0, 100.0) if self._wireless else 100.0
        self._tamper_left_s = 0.0

    def _step(self, local: datetime, dt_s: float) -> tuple[Metrics, list[SimEvent]]:
        rng = self.rng
        door = self._door
        lam = self._passages * busy_weight(local) * dt_s / 86_400
        events: list[SimEvent] = []
        for _ in range(poisson(rng, lam)):
            data: EventData = {
                "credential": rng.choices(CREDENTIALS, weights=CREDENTIAL_WEIGHTS)[0],
                "door": door,
                "direction": rng.choice(("in", "out")),
            }
            events.append(SimEvent(name="access_granted", data=data))
        for _ in range(poisson(rng, lam * DENIED_SHARE)):
            data = {
                "credential": rng.choices(CREDENTIALS, weights=CREDENTIAL_WEIGHTS)[0],
                "door": door,
                "reason": rng.choice(DENIAL_REASONS),
            }
            events.append(SimEvent(name="access_denied", data=data))
        # The heartbeat catches the door open if a passage is under way right now.
        door_open = dt_s > 0 and rng.random() < min(1.0, lam * OPEN_S_PER_PASSAGE / dt_s)
        if self._happens(HELD_OPEN_PER_DAY, dt_s, local=local):
            seconds = round(rng.uniform(35.0, 300.0))
            events.append(SimEvent(name="door_held_open", data={"door": door, "seconds": seconds}))
            door_open = True
        if self._tamper_left_s > 0:
            self._tamper_left_s -= dt_s
        if self._happens(FORCED_PER_DAY, dt_s):
            events.append(SimEvent(name="door_forced", data={"door": door}))
            door_open = True
            if rng.random() < TAMPER_WITH_FORCE_SHARE:
                self._tamper_left_s = rng.uniform(*TAMPER_S)
        elif self._tamper_left_s <= 0 and self._happens(TAMPER_PER_DAY, dt_s):
            self._tamper_left_s = rng.uniform(*TAMPER_S)

        if self._wireless:
            self._battery = max(0.0, self._battery - WIRELESS_DRAIN_PCT_PER_H * dt_s / 3600)
            battery = round(self._battery)
        else:
            battery = round(min(100.0, rng.gauss(99.0, 0.5)))
        metrics: Metrics = {
            "door_open": int(door_open),
            "tamper": int(self._tamper_left_s > 0),
            "battery": battery,
            "rssi": round(rng.gauss(-70.0, 6.0)),
        }
        return metrics, events
