"""Metric catalogue: which metrics each device class reports, their units and physical ranges.

A value outside its range is not a reading, it is a broken sensor or a broken
encoder, and is dead-lettered. Ranges are physical limits, not alarm thresholds
(those live in rules). Sources: ../shared/domain.md.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEVICE_CLASSES", "METRICS", "MetricSpec", "metric_spec"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    unit: str
    low: float
    high: float


def _specs(*items: tuple[str, str, float, float]) -> dict[str, MetricSpec]:
    return {name: MetricSpec(name, unit, low, high) for name, unit, low, high in items}


_COMMON = (
    ("battery", "%", 0, 100),
    ("battery_v", "V", 0, 15),
    ("rssi", "dBm", -150, 0),
)

METRICS: dict[str, dict[str, MetricSpec]] = {
    "fire": _specs(
        *_COMMON,
        ("temperature", "Cel", -40, 200),  # heat detectors go past 160 degC (EN 54-5 class G)
        ("smoke_obscuration", "%/m", 0, 100),
        ("gas_lel", "%LEL", 0, 100),
        ("residual_current", "mA", 0, 5000),
        ("cable_temperature", "Cel", -40, 250),
        ("pipe_pressure", "MPa", 0, 4),
        ("tank_level", "m", 0, 50),
        ("extinguisher_pressure", "MPa", 0, 4),
        ("door_open", "", 0, 1),
        # Analog values of fire panels (GB/T 26875.3 table 8.2.1.3) without a name above.
        ("event_count", "count", 0, 32_000),
        ("duration", "s", 0, 32_000),
        ("voltage", "V", 0, 3_200),
        ("current", "A", 0, 3_200),
        ("flow", "L/s", 0, 3_200),
        ("air_volume", "m3/min", 0, 3_200),
        ("wind_speed", "m/s", 0, 100),
    ),
    "locker": _specs(
        *_COMMON,
        ("temperature", "Cel", -40, 70),
        ("occupied", "count", 0, 1000),
        ("compartments", "count", 0, 1000),
        ("door_open", "count", 0, 1000),
        ("mains_power", "", 0, 1),
        ("overdue", "count", 0, 1000),
    ),
    "access": _specs(
        *_COMMON,
        ("door_open", "", 0, 1),
        ("tamper", "", 0, 1),
    ),
    "wearable": _specs(
        *_COMMON,
        ("heart_rate", "beat/min", 0, 300),
        ("spo2", "%", 0, 100),
        ("skin_temperature", "Cel", 20, 45),
        ("steps", "count", 0, 200_000),
        ("lat", "lat", -90, 90),
        ("lon", "lon", -180, 180),
        ("worn", "", 0, 1),
    ),
}

DEVICE_CLASSES: frozenset[str] = frozenset(METRICS)


def metric_spec(device_class: str, metric: str) -> MetricSpec | None:
    return METRICS.get(device_class, {}).get(metric)
