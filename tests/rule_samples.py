"""A rule the alert tests share: one heart-rate threshold, parsed by the rule tests,
run by the engine's and played against PostgreSQL by the listener's."""

from __future__ import annotations

from typing import Any

__all__ = ["HEART_RATE_HIGH"]

# Above 120 bpm for 10 minutes (two breaches at least), cleared below 110.
HEART_RATE_HIGH: dict[str, Any] = {
    "id": "hr.high",
    "type": "threshold",
    "title": "Heart rate high",
    "severity": "major",
    "scope": {"device_class": "wearable"},
    "metric": "heart_rate",
    "op": ">",
    "raise": 120,
    "clear": 110,
    "for": "10m",
    "min_breaches": 2,
}
