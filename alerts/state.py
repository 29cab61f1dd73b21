"""Rule-engine state: per rule, the subjects that are not idle.

Idle subjects have no entry, so memory and what is persisted grow with what is
happening, not with the fleet. Each rule's entries know how to become JSON and
back; ``dirty`` and ``removed`` say what to write in the next alert transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

import numpy as np

from alerts.model import FloatArray

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["EngineState", "Entry", "JsonFields", "Presence", "RuleState"]


class Entry(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class JsonFields:
    """``to_json`` for an entry that is a dataclass: its fields, one level deep.

    Not ``dataclasses.asdict``: that recurses and copies, a hot spot in a storm. Only
    lists and deques (windows, chatter flips) are copied, into lists, so that what is
    taken for the next write stays as it was taken and is JSON.
    """

    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        return {
            f.name: _json_field(getattr(self, f.name))
            for f in fields(cast("DataclassInstance", self))
        }


def _json_field(value: Any) -> Any:
    return list(value) if isinstance(value, list | deque) else value


E = TypeVar("E", bound=Entry)


@dataclass(slots=True)
class RuleState(Generic[E]):
    entries: dict[str, E] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    # False for state rebuilt from stored readings instead (rate windows).
    persistent: bool = True

    def get(self, subject: str) -> E | None:
        return self.entries.get(subject)

    def put(self, subject: str, entry: E) -> None:
        self.entries[subject] = entry
        if self.persistent:
            self.dirty.add(subject)
            self.removed.discard(subject)

    def touch(self, subject: str) -> None:
        if self.persistent:
            self.dirty.add(subject)

    def drop(self, subject: str) -> None:
        if self.entries.pop(subject, None) is not None and self.persistent:
            self.removed.add(subject)
            self.dirty.discard(subject)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.entries))

    def take_changes(self) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """Entries to upsert and subjects to delete since the last call."""
        upserts = {s: self.entries[s].to_json() for s in self.dirty if s in self.entries}
        removed = set(self.removed)
        self.dirty.clear()
        self.removed.clear()
        return upserts, removed

    def load(self, subject: str, entry: E) -> None:
        """Restore without marking dirty."""
        self.entries[subject] = entry

    def restored(self, subject: str, make: Callable[[], E]) -> E:
        """The subject's entry; one from ``make`` restored (not dirty) if it has none."""
        entry = self.entries.get(subject)
        if entry is None:
            entry = self.entries[subject] = make()
        return entry


class Presence:
    """Newest sign of life per device, as numpy arrays so that absence checks vectorise."""

    _GROW = 1024

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.devices: list[str] = []
        self.last_seen: FloatArray = np.full(self._GROW, np.nan)

    def _slot(self, device_id: str) -> int:
        slot = self.index.get(device_id)
        if slot is None:
            slot = len(self.devices)
            self.index[device_id] = slot
            self.devices.append(device_id)
            if slot >= len(self.last_seen):
                grown = np.full(len(self.last_seen) * 2, np.nan)
                grown[: len(self.last_seen)] = self.last_seen
                self.last_seen = grown
        return slot

    def update(self, seen: dict[str, float]) -> None:
        last = self.last_seen
        for device_id, ts in seen.items():
            slot = self._slot(device_id)
            last = self.last_seen
            current = last[slot]
            if not current >= ts:  # NaN (never seen) compares False
                last[slot] = ts

    def get(self, device_id: str) -> float | None:
        slot = self.index.get(device_id)
        if slot is None:
            return None
        value = float(self.last_seen[slot])
        return None if np.isnan(value) else value

    def view(self) -> tuple[list[str], FloatArray]:
        return self.devices, self.last_seen[: len(self.devices)]


@dataclass(slots=True)
class EngineState:
    rules: dict[str, RuleState[Any]] = field(default_factory=dict)
    presence: Presence = field(default_factory=Presence)
    # Latest value of metrics that follow-ups watch, per (device, metric).
    last_values: dict[tuple[str, str], float] = field(default_factory=dict)
    # Devices whose Last Will (or offline status) came with nothing since: when.
    links_down: dict[str, float] = field(default_factory=dict)

    def rule(self, rule_id: str, factory: Callable[[], RuleState[Any]]) -> RuleState[Any]:
        found = self.rules.get(rule_id)
        if found is None:
            found = self.rules[rule_id] = factory()
        return found
