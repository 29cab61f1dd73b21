"""GB/T 26875.3-2011 frames: the byte layout between a UITD and the monitoring centre.

Pure: no I/O. A frame is ``@@``, a 25-byte control unit (business serial number,
protocol version, 6-byte time label, 6-byte source and destination addresses,
application data length, command byte), the application data unit (at most
1024 bytes), a checksum and ``##``. Multi-byte integers are little-endian. The
checksum is the sum, modulo 256, of every byte from the serial number through
the end of the application data (``@@``, the checksum and ``##`` excluded).

``StreamDecoder`` cuts a TCP byte stream into frames: a frame split across
reads waits for its rest, several frames in one read all come out, and bytes
that are no frame are skipped to the next ``@@``. It never raises: what cannot
be a frame comes out as a ``FrameError`` with its reason and raw bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, tzinfo
from enum import IntEnum, StrEnum

from core.errors import SmartCommunityError

__all__ = [
    "MAX_ADU",
    "Command",
    "Frame",
    "FrameError",
    "FrameFault",
    "StreamDecoder",
    "TimeLabel",
    "checksum",
    "decode_frame",
    "encode_frame",
    "format_address",
    "parse_address",
]

START = b"@@"
END = b"##"
# serial, version major, version minor, time label, source, destination, ADU length, command
_CONTROL = struct.Struct("<HBB6s6s6sHB")
HEADER_LEN = len(START) + _CONTROL.size  # 27: through the command byte
TRAILER_LEN = 3  # checksum + "##"
# The standard's limit on the application data unit.
MAX_ADU = 1024
MAX_FRAME = HEADER_LEN + MAX_ADU + TRAILER_LEN
# A partial frame this large with no frame after it is given up (the stream resyncs).
_LOOKAHEAD_MIN = HEADER_LEN + TRAILER_LEN


class Command(IntEnum):
    CONTROL = 1  # a command from the centre (clock sync, duty check ...)
    SEND = 2  # data from the UITD
    CONFIRM = 3
    REQUEST = 4
    RESPONSE = 5
    DENY = 6


class FrameFault(StrEnum):
    """Why bytes are not a frame. Stable values: dead letters and metrics use them."""

    BAD_CHECKSUM = "bad_checksum"
    BAD_LENGTH = "bad_length"
    BAD_END = "bad_end"
    GARBAGE = "garbage"  # bytes before a start marker
    TRUNCATED = "truncated"  # a frame cut short (another frame began inside it)


class FrameError(SmartCommunityError):
    """Bytes that are no valid frame. ``raw`` holds them; ``header`` is the parsed
    control unit when it could be read (so a deny can echo its serial number)."""

    def __init__(
        self, fault: FrameFault, detail: str, raw: bytes, header: Frame | None = None
    ) -> None:
        super().__init__(f"{fault.value}: {detail}")
        self.fault = fault
        self.detail = detail
        self.raw = raw
        self.header = header


@dataclass(frozen=True, slots=True)
class TimeLabel:
    """Six bytes: second, minute, hour, day, month, year (0-99). Local time, no zone."""

    second: int
    minute: int
    hour: int
    day: int
    month: int
    year: int

    @classmethod
    def from_bytes(cls, raw: bytes) -> TimeLabel:
        return cls(*raw[:6])

    @classmethod
    def of(cls, when: datetime) -> TimeLabel:
        """The label for ``when`` in its own zone (convert it to the device's zone first)."""
        return cls(when.second, when.minute, when.hour, when.day, when.month, when.year % 100)

    def to_bytes(self) -> bytes:
        return bytes((self.second, self.minute, self.hour, self.day, self.month, self.year))

    def to_datetime(self, zone: tzinfo) -> datetime:
        """The instant, reading the label in ``zone``; ``ValueError`` for an impossible date."""
        return datetime(
            2000 + self.year, self.month, self.day, self.hour, self.minute, self.second, tzinfo=zone
        )


@dataclass(frozen=True, slots=True)
class Frame:
    serial: int
    version: tuple[int, int]
    time: TimeLabel
    source: bytes  # 6 bytes, as sent (low byte first)
    destination: bytes
    command: int
    adu: bytes = b""

    @property
    def raw_length(self) -> int:
        return HEADER_LEN + len(self.adu) + TRAILER_LEN


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def format_address(address: bytes) -> str:
    """An address as installers write it: its six bytes in hex, as transmitted."""
    return address.hex()


def parse_address(text: str) -> bytes:
    """``0102030a0b0c`` or ``01:02:03:0a:0b:0c`` (bytes in transmission order)."""
    raw = bytes.fromhex(text.replace(":", "").replace("-", "").replace(" ", ""))
    if len(raw) != 6:
        raise ValueError(f"a UITD address has 6 bytes, {text!r} has {len(raw)}")
    return raw


def encode_frame(frame: Frame) -> bytes:
    if len(frame.adu) > MAX_ADU:
        raise ValueError(f"application data of {len(frame.adu)} bytes exceeds {MAX_ADU}")
    if len(frame.source) != 6 or len(frame.destination) != 6:
        raise ValueError("addresses are 6 bytes")
    control = _CONTROL.pack(
        frame.serial,
        frame.version[0],
        frame.version[1],
        frame.time.to_bytes(),
        frame.source,
        frame.destination,
        len(frame.adu),
        frame.command,
    )
    body = control + frame.adu
    return START + body + bytes((checksum(body),)) + END


def _header(raw: bytes) -> tuple[Frame, int]:
    serial, major, minor, label, source, destination, length, command = _CONTROL.unpack_from(
        raw, len(START)
    )
    frame = Frame(serial, (major, minor), TimeLabel.from_bytes(label), source, destination, command)
    return frame, length


def decode_frame(raw: bytes) -> Frame:
    """One whole frame, exactly; ``FrameError`` if it is not one."""
    if len(raw) < HEADER_LEN + TRAILER_LEN or not raw.startswith(START):
        raise FrameError(FrameFault.GARBAGE, f"{len(raw)} bytes without a frame", raw)
    header, length = _header(raw)
    if length > MAX_ADU:
        raise FrameError(FrameFault.BAD_LENGTH, f"data length {length} > {MAX_ADU}", raw, header)
    total = HEADER_LEN + length + TRAILER_LEN
    if len(raw) != total:
        raise FrameError(
            FrameFault.BAD_LENGTH,
            f"data length {length} means {total} bytes, got {len(raw)}",
            raw,
            header,
        )
    if raw[-2:] != END:
        raise FrameError(FrameFault.BAD_END, f"ends with {raw[-2:].hex()}, not 2323", raw, header)
    body = raw[len(START) : HEADER_LEN + length]
    expected = checksum(body)
    if raw[-3] != expected:
        raise FrameError(
            FrameFault.BAD_CHECKSUM,
            f"checksum {raw[-3]:#04x}, computed {expected:#04x}",
            raw,
            header,
        )
    return Frame(
        header.serial,
        header.version,
        header.time,
        header.source,
        header.destination,
        header.command,
        bytes(body[_CONTROL.size :]),
    )


class StreamDecoder:
    """Frames out of a byte stream, in order. ``feed`` never raises."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        self._buf += data
        out: list[Frame | FrameError] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _skip(self, count: int, fault: FrameFault, detail: str) -> FrameError:
        raw = bytes(self._buf[:count])
        del self._buf[:count]
        return FrameError(fault, detail, raw)

    def _next(self) -> Frame | FrameError | None:
        buf = self._buf
        start = buf.find(START)
        if start < 0:
            # Keep a lone trailing '@': it may be the first half of the next start.
            keep = 1 if buf.endswith(b"@") else 0
            if len(buf) > keep:
                return self._skip(len(buf) - keep, FrameFault.GARBAGE, "no start marker")
            return None
        if start > 0:
            return self._skip(start, FrameFault.GARBAGE, f"{start} bytes before a start marker")
        if len(buf) < HEADER_LEN:
            return None
        header, length = _header(bytes(buf[:HEADER_LEN]))
        if length > MAX_ADU:
            # Checked before waiting: a stray '@@' would otherwise stall the stream.
            # Only the first byte is consumed: the next start may lie inside the header.
            raw = bytes(buf[:HEADER_LEN])
            del buf[:1]
            return FrameError(
                FrameFault.BAD_LENGTH, f"data length {length} > {MAX_ADU}", raw, header
            )
        total = HEADER_LEN + length + TRAILER_LEN
        if len(buf) < total:
            return self._superseded()
        raw = bytes(buf[:total])
        try:
            frame = decode_frame(raw)
        except FrameError as exc:
            # Skip only the first byte: the next start may lie inside these bytes.
            del buf[:1]
            return exc
        del buf[:total]
        return frame

    def _superseded(self) -> FrameError | None:
        """While waiting for the rest of a frame: if a complete valid frame already
        begins later in the buffer, the bytes before it were no frame after all."""
        buf = self._buf
        at = buf.find(START, 1)
        while at > 0:
            if len(buf) - at < _LOOKAHEAD_MIN:
                return None
            _, length = _header(bytes(buf[at : at + HEADER_LEN]))
            total = HEADER_LEN + length
            if length <= MAX_ADU and len(buf) - at >= total + TRAILER_LEN:
                try:
                    decode_frame(bytes(buf[at : at + total + TRAILER_LEN]))
                except FrameError:
                    pass
                else:
                    return self._skip(
                        at, FrameFault.TRUNCATED, "a frame began before this one was complete"
                    )
            at = buf.find(START, at + 1)
        return None
