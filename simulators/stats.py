"""What a simulator run reports: periodic progress and the final figures."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Progress", "SimulationStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A periodic snapshot while the simulator runs."""

    elapsed_s: float
    telemetry: int
    events: int
    # Messages the broker has acknowledged so far (statuses included).
    confirmed: int
    # Telemetry and events published per second since the previous snapshot.
    rate: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationStats:
    """Counts of what was sent; ``confirmed`` is what the broker acknowledged (QoS 1)."""

    telemetry: int
    events: int
    statuses: int
    confirmed: int
    # Acknowledged with an MQTT 5 failure code (e.g. not authorised by an ACL).
    refused: int
    # The paced phase: from the first telemetry message to the last.
    elapsed_s: float

    @property
    def sent(self) -> int:
        return self.telemetry + self.events + self.statuses

    @property
    def published(self) -> int:
        """Messages the broker accepted: acknowledged and not refused."""
        return self.confirmed - self.refused

    @property
    def unconfirmed(self) -> int:
        return self.sent - self.confirmed

    @property
    def rate(self) -> float:
        """Telemetry and events a second over the paced phase."""
        return (self.telemetry + self.events) / self.elapsed_s if self.elapsed_s > 0 else 0.0
