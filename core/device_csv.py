"""The installer's CSV of devices: read it, validate every row, say what is wrong and where.

Columns (header row required, any order; only the first three are required)::

    id,community_id,device_class,model,name,expected_interval_s,building,floor,unit,
    resident_id,installed_at

``device_id`` is accepted for ``id``. Empty cells take the default. Line numbers
are the file's own (the header is line 1), so an installer can go straight to
the row in an editor. Problems with the file as a whole (no header, an unknown
column, too large) are a ``CsvFileError``: nothing can be imported from it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from pydantic import ValidationError

from core.registry import DeviceSpec

__all__ = [
    "COLUMNS",
    "MAX_CSV_BYTES",
    "MAX_CSV_ROWS",
    "CsvFileError",
    "CsvRow",
    "ParsedCsv",
    "RowError",
    "parse_devices_csv",
    "validation_reason",
]

# A large estate is a few thousand devices; past this, split the file (and the
# transaction that imports it, which locks every row it inserts).
MAX_CSV_ROWS = 10_000
# 10,000 rows of a few hundred bytes each, with room for long names.
MAX_CSV_BYTES = 4 * 1024 * 1024
COLUMNS = (
    "id",
    "community_id",
    "device_class",
    "model",
    "name",
    "expected_interval_s",
    "building",
    "floor",
    "unit",
    "resident_id",
    "installed_at",
)
_REQUIRED = ("id", "community_id", "device_class")
_ALIASES = {"device_id": "id"}


class CsvFileError(ValueError):
    """The file cannot be read as a device list at all."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    spec: DeviceSpec


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    device_id: str | None
    reason: str


@dataclass(slots=True)
class ParsedCsv:
    rows: list[CsvRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def validation_reason(exc: ValidationError) -> str:
    """Pydantic's errors as one line a person can act on: ``field: what is wrong``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _header(names: list[str] | None) -> list[str]:
    if not names:
        raise CsvFileError(1, "empty file: the first line must name the columns")
    header = [_ALIASES.get(n.strip().lower(), n.strip().lower()) for n in names]
    unknown = [n for n in header if n not in COLUMNS]
    if unknown:
        raise CsvFileError(
            1, f"unknown column {unknown[0]!r}: the columns are {', '.join(COLUMNS)}"
        )
    repeated = sorted({n for n in header if header.count(n) > 1})
    if repeated:
        raise CsvFileError(1, f"column {repeated[0]!r} appears twice")
    missing = [n for n in _REQUIRED if n not in header]
    if missing:
        raise CsvFileError(1, f"missing column {', '.join(missing)}")
    return header


def parse_devices_csv(text: str) -> ParsedCsv:
    """Every row validated; rows that fail are errors with their line, the rest rows."""
    if len(text.encode("utf-8")) > MAX_CSV_BYTES:
        raise CsvFileError(1, f"file larger than {MAX_CSV_BYTES // (1024 * 1024)} MiB: split it")
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = _header(next(reader, None))
    except csv.Error as exc:
        raise CsvFileError(1, f"not CSV: {exc}") from None
    result = ParsedCsv()
    first_line: dict[str, int] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader, None)
        except csv.Error as exc:
            raise CsvFileError(start, f"not CSV: {exc}") from None
        if cells is None:
            break
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue  # blank line
        if len(result.rows) + len(result.errors) >= MAX_CSV_ROWS:
            raise CsvFileError(start, f"more than {MAX_CSV_ROWS:,} devices: split the file")
        if len(cells) != len(header):
            result.errors.append(
                RowError(start, None, f"{len(cells)} cells, the header has {len(header)}")
            )
            continue
        values = {k: v for k, v in zip(header, cells, strict=True) if v.strip()}
        device_id = values.get("id", "").strip() or None
        try:
            spec = DeviceSpec.model_validate(values)
        except ValidationError as exc:
            result.errors.append(RowError(start, device_id, validation_reason(exc)))
            continue
        if spec.id in first_line:
            also = first_line[spec.id]
            result.errors.append(
                RowError(start, spec.id, f"device {spec.id!r} is also on line {also}")
            )
            continue
        first_line[spec.id] = start
        result.rows.append(CsvRow(start, spec))
    return result
