"""The rule engine driven by a controllable clock: its devices, batches and harness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from alerts.engine import Engine
from alerts.model import AlertChange, DeviceInfo, Observations, observations
from alerts.state import EngineState
from core.models import DeviceEvent, Reading
from core.rules import Rule, parse_rule
from tests.rule_samples import HEART_RATE_HIGH

# 10:00 in Shanghai.
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC).timestamp()
MIN = 60.0


def device(
    device_id: str,
    device_class: str = "wearable",
    *,
    building: str | None = None,
    interval: float = 600,
    community: str = "c1",
) -> DeviceInfo:
    return DeviceInfo(device_id, community, device_class, interval, building)


DEVICES = {
    d.device_id: d
    for d in (
        device("w1"),
        device("w2"),
        device("h1", "fire", building="3"),
        device("s1", "fire", building="3"),
        device("s2", "fire", building="3"),
        device("s3", "fire", building="4"),
        device("s4", "fire"),
        device("d1", "access", interval=60),
        device("d2", "access", interval=60),
    )
}


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def batch(
    readings: list[tuple[str, str, float, float]] = (),  # type: ignore[assignment]
    events: list[tuple[str, str, float, dict[str, Any]]] = (),  # type: ignore[assignment]
) -> Observations:
    items: list[tuple[str, list[Reading], DeviceEvent | None]] = []
    for device_id, metric, ts, value in readings:
        items.append((device_id, [Reading(device_id, metric, at(ts), value, None, at(ts))], None))
    for device_id, name, ts, data in events:
        items.append((device_id, [], DeviceEvent(device_id, name, at(ts), data, None, at(ts))))
    return observations(items, DEVICES)


class Harness:
    """An engine, its state and a clock the test moves."""

    def __init__(self, *rules: dict[str, Any]) -> None:
        self.rules: list[Rule] = [parse_rule(r) for r in rules]
        self.engine = Engine(self.rules, DEVICES)
        self.state = EngineState()

    def feed(
        self,
        now: float,
        readings: list[tuple[str, str, float, float]] | None = None,
        events: list[tuple[str, str, float, dict[str, Any]]] | None = None,
    ) -> list[AlertChange]:
        changes, self.state = self.engine.evaluate(
            batch(readings or [], events or []), self.state, now
        )
        return changes

    def tick(self, now: float) -> list[AlertChange]:
        changes, self.state = self.engine.tick(self.state, now)
        return changes


def kinds(changes: list[AlertChange]) -> list[tuple[str, str, str]]:
    return [(c.kind.value, c.subject, c.severity.value) for c in changes]


HR_HIGH = HEART_RATE_HIGH


BATTERY = {
    "id": "bat.low",
    "type": "threshold",
    "title": "Battery low",
    "severity": "warning",
    "scope": {"device_class": "wearable"},
    "metric": "battery",
    "op": "<",
    "raise": 20,
    "clear": 25,
}
