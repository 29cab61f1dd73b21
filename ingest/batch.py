"""What one transaction writes: accepted messages and dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.models import DeviceEvent, DeviceStatus, Reading

__all__ = ["Accepted", "Batch", "DeadLetter", "WriteResult"]


@dataclass(slots=True)
class Accepted:
    """The content of one valid message."""

    device_id: str
    topic: str
    payload: bytes  # kept so that a message the database refuses can be dead-lettered
    readings: list[Reading] = field(default_factory=list)
    event: DeviceEvent | None = None
    status: DeviceStatus | None = None
    device_time: datetime | None = None
    received_at: datetime | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    detail: str
    received_at: datetime


@dataclass(slots=True)
class Batch:
    accepted: list[Accepted] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.accepted) + len(self.dead_letters)


@dataclass(frozen=True, slots=True)
class WriteResult:
    rows_written: int
    rows_duplicate: int
    events_written: int
    dead_letters: list[DeadLetter]  # including messages the database refused
