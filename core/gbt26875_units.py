"""GB/T 26875.3-2011 application data units: type flag, object count, objects.

Pure: no I/O. Upstream types 1, 2, 3, 4, 21, 24 and 28 and downstream types 90
(clock sync) and 91 (duty check) are decoded into objects; any other type keeps
its bytes (``Unsupported``). Every object of an upstream type ends with the
6-byte time label of when it happened (device local time).

Bit numbers follow the standard's tables: bit 0 is the least significant bit of
the little-endian status word.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

from core.errors import SmartCommunityError
from core.gbt26875 import TimeLabel

__all__ = [
    "ANALOG_TYPES",
    "AnalogType",
    "ClockSync",
    "ComponentAnalog",
    "ComponentStatus",
    "DataObject",
    "DataUnit",
    "DutyCheck",
    "OperationRecord",
    "SystemStatus",
    "UitdOperation",
    "UitdStatus",
    "UitdTime",
    "UnitError",
    "Unsupported",
    "decode_unit",
    "encode_unit",
]

DESCRIPTION_LEN = 31  # GB 18030, NUL padded


class UnitError(SmartCommunityError):
    """Application data that does not match its type's layout."""

    def __init__(self, type_flag: int, detail: str) -> None:
        super().__init__(f"type {type_flag}: {detail}")
        self.type_flag = type_flag
        self.detail = detail


def _description(raw: bytes) -> str:
    text = raw.split(b"\0", 1)[0].decode("gb18030", errors="replace")
    return text.rstrip(" ")


def _description_bytes(text: str) -> bytes:
    raw = text.encode("gb18030")[:DESCRIPTION_LEN]
    return raw.ljust(DESCRIPTION_LEN, b"\0")


class _Wire:
    """An object whose fields are its layout's values in order: a ``TimeLabel``
    travels as its 6 bytes, a description as GB 18030 padded to 31 bytes."""

    __slots__ = ()
    LAYOUT: ClassVar[struct.Struct]

    def pack(self) -> bytes:
        return self.LAYOUT.pack(*(_to_wire(getattr(self, name)) for name, _ in _fields(type(self))))

    @classmethod
    def unpack(cls, raw: bytes) -> Self:
        values = cls.LAYOUT.unpack(raw)
        return cls(*(read(v) for (_, read), v in zip(_fields(cls), values, strict=True)))


def _to_wire(value: object) -> object:
    if isinstance(value, TimeLabel):
        return value.to_bytes()
    if isinstance(value, str):
        return _description_bytes(value)
    return value


# Per object type: each field's name and how its wire value is read.
_FIELDS: dict[type[_Wire], tuple[tuple[str, Callable[[Any], Any]], ...]] = {}
# Field types are strings under ``from __future__ import annotations``.
_READ: dict[str, Callable[[Any], Any]] = {"TimeLabel": TimeLabel.from_bytes, "str": _description}


def _fields(kind: type[_Wire]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    found = _FIELDS.get(kind)
    if found is None:
        found = _FIELDS[kind] = tuple(
            (f.name, _READ.get(str(f.type), int))
            for f in fields(kind)  # type: ignore[arg-type]  # every subclass is a dataclass
        )
    return found


class _Component(_Wire):
    """A component's address: zone (loop) in the low two bytes, position (point) above."""

    __slots__ = ()
    component_address: int

    @property
    def zone(self) -> int:
        return self.component_address & 0xFFFF

    @property
    def position(self) -> int:
        return self.component_address >> 16


@dataclass(frozen=True, slots=True)
class SystemStatus(_Wire):
    TYPE: ClassVar[int] = 1
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBH6s")
    system_type: int
    system_address: int
    status: int
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class ComponentStatus(_Component):
    TYPE: ClassVar[int] = 2
    LAYOUT: ClassVar[struct.Struct] = struct.Struct(f"<BBBIH{DESCRIPTION_LEN}s6s")
    system_type: int
    system_address: int
    component_type: int
    component_address: int  # the 4 raw bytes, little-endian
    status: int
    description: str
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class ComponentAnalog(_Component):
    TYPE: ClassVar[int] = 3
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBBIBh6s")
    system_type: int
    system_address: int
    component_type: int
    component_address: int
    analog_type: int
    value: int  # signed 16-bit, in the analog type's resolution
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class OperationRecord(_Wire):
    TYPE: ClassVar[int] = 4
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBBB6s")
    system_type: int
    system_address: int
    flags: int
    operator: int
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class UitdStatus(_Wire):
    TYPE: ClassVar[int] = 21
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B6s")
    status: int
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class UitdOperation(_Wire):
    TYPE: ClassVar[int] = 24
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BB6s")
    flags: int
    operator: int
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class UitdTime(_Wire):
    TYPE: ClassVar[int] = 28
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<6s")
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class ClockSync(_Wire):
    """Downstream 90: set the UITD's clock to this time (the centre's, in the UITD's zone)."""

    TYPE: ClassVar[int] = 90
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<6s")
    time: TimeLabel


@dataclass(frozen=True, slots=True)
class DutyCheck(_Wire):
    """Downstream 91 (查岗). The standard calls its byte reserved; UITDs in the field
    read it as the answer time in minutes."""

    TYPE: ClassVar[int] = 91
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<B")
    answer_minutes: int


DataObject = (
    SystemStatus
    | ComponentStatus
    | ComponentAnalog
    | OperationRecord
    | UitdStatus
    | UitdOperation
    | UitdTime
    | ClockSync
    | DutyCheck
)
_TYPES: dict[int, type[DataObject]] = {
    t.TYPE: t
    for t in (
        SystemStatus,
        ComponentStatus,
        ComponentAnalog,
        OperationRecord,
        UitdStatus,
        UitdOperation,
        UitdTime,
        ClockSync,
        DutyCheck,
    )
}


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A type flag this platform does not interpret (versions, configurations ...)."""

    type_flag: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class DataUnit:
    type_flag: int
    objects: tuple[DataObject, ...]


def decode_unit(adu: bytes) -> DataUnit | Unsupported:
    """The application data of a send/control frame; ``UnitError`` if it breaks its layout."""
    if len(adu) < 2:
        raise UnitError(adu[0] if adu else 0, f"{len(adu)} bytes: no type flag and object count")
    type_flag, count = adu[0], adu[1]
    kind = _TYPES.get(type_flag)
    if kind is None:
        return Unsupported(type_flag, bytes(adu))
    size = kind.LAYOUT.size
    body = adu[2:]
    if len(body) != count * size:
        raise UnitError(
            type_flag,
            f"{count} objects of {size} bytes need {count * size} bytes, got {len(body)}",
        )
    objects = tuple(kind.unpack(bytes(body[i * size : (i + 1) * size])) for i in range(count))
    return DataUnit(type_flag, objects)


def encode_unit(objects: Sequence[DataObject]) -> bytes:
    """The application data for objects of one type (at least one object)."""
    if not objects:
        raise ValueError("a data unit needs an object to name its type")
    kind = type(objects[0])
    if any(type(o) is not kind for o in objects):
        raise ValueError("one data unit holds objects of one type")
    if len(objects) > 255:
        raise ValueError("at most 255 objects per data unit")
    return bytes((kind.TYPE, len(objects))) + b"".join(o.pack() for o in objects)


@dataclass(frozen=True, slots=True)
class AnalogType:
    """How an analog value (type 3) becomes a reading: metric, unit and scale."""

    metric: str
    unit: str
    scale: float


# The standard's analog table (8.2.1.3). Metrics are the fire class's catalogue
# names where the meaning is the same, so default rules apply to panel sensors.
# kPa (type 5) is converted to MPa so that pressure rules have one unit.
ANALOG_TYPES: dict[int, AnalogType] = {
    1: AnalogType("event_count", "count", 1.0),
    2: AnalogType("tank_level", "m", 0.01),
    3: AnalogType("temperature", "Cel", 0.1),
    4: AnalogType("pipe_pressure", "MPa", 0.1),
    5: AnalogType("pipe_pressure", "MPa", 0.0001),  # 0.1 kPa steps
    6: AnalogType("gas_lel", "%LEL", 0.1),
    7: AnalogType("duration", "s", 1.0),
    8: AnalogType("voltage", "V", 0.1),
    9: AnalogType("current", "A", 0.1),
    10: AnalogType("flow", "L/s", 0.1),
    11: AnalogType("air_volume", "m3/min", 0.1),
    12: AnalogType("wind_speed", "m/s", 1.0),
}
