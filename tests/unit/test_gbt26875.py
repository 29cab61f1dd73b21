"""GB/T 26875.3 frame codec: fixed vectors written from the standard's layout,
round trips, errors, and the stream decoder under split, merged and garbled input."""

from __future__ import annotations

import contextlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.gbt26875 import (
    Command,
    Frame,
    FrameError,
    FrameFault,
    StreamDecoder,
    TimeLabel,
    decode_frame,
    encode_frame,
)
from core.gbt26875_units import (
    ClockSync,
    ComponentAnalog,
    ComponentStatus,
    DataObject,
    DataUnit,
    DutyCheck,
    OperationRecord,
    SystemStatus,
    UitdOperation,
    UitdStatus,
    UitdTime,
    UnitError,
    Unsupported,
    decode_unit,
    encode_unit,
)

UITD = bytes([0x11, 0x22, 0x33, 0x44, 0x55, 0x66])
CENTRE = bytes([0x01, 0x00, 0x00, 0x00, 0x00, 0x00])
# 2026-12-03 09:58:02 local: sec, min, hour, day, month, year
WHEN = bytes([2, 58, 9, 3, 12, 26])


def frame_bytes(serial: int, command: int, adu: bytes, src: bytes = UITD) -> bytes:
    """A frame assembled field by field as the standard's table lays it out; the
    checksum is summed here, independently of the codec."""
    control = (
        serial.to_bytes(2, "little")
        + bytes([1, 0])  # version 1.0
        + WHEN
        + src
        + (CENTRE if src == UITD else UITD)
        + len(adu).to_bytes(2, "little")
        + bytes([command])
    )
    total = 0
    for b in control + adu:
        total += b
    return b"\x40\x40" + control + adu + bytes([total % 256]) + b"\x23\x23"


# One fixed vector per supported type flag: (ADU bytes, expected decoded unit).
T = TimeLabel(2, 58, 9, 3, 12, 26)
VECTORS: dict[str, tuple[bytes, DataUnit]] = {
    # 1: system type 1 (fire alarm system), address 2, status 0x0102 (normal + main power fault)
    "system_status": (
        bytes([1, 1, 1, 2, 0x03, 0x01, *WHEN]),
        DataUnit(1, (SystemStatus(1, 2, 0x0103, T),)),
    ),
    # 2: system 1/1, smoke detector (40), zone 10 position 2, status fire (bit 1),
    # description "3F东" in GB 18030 padded with NUL
    "component_status": (
        bytes([2, 1, 1, 1, 40, 0x0A, 0x00, 0x02, 0x00, 0x02, 0x00])
        + b"3F\xb6\xab"
        + bytes(27)
        + WHEN,
        DataUnit(2, (ComponentStatus(1, 1, 40, 0x0002000A, 0x0002, "3F东", T),)),
    ),
    # 3: pressure (type 4, 0.1 MPa) on a pressure switch (99), zone 1 position 7, value -3
    "component_analog": (
        bytes([3, 1, 11, 1, 99, 0x01, 0x00, 0x07, 0x00, 4, 0xFD, 0xFF, *WHEN]),
        DataUnit(3, (ComponentAnalog(11, 1, 99, 0x00070001, 4, -3, T),)),
    ),
    # 4: reset (bit 0) + silence (bit 1) by operator 5
    "operation": (
        bytes([4, 1, 1, 1, 0x03, 5, *WHEN]),
        DataUnit(4, (OperationRecord(1, 1, 0x03, 5, T),)),
    ),
    # 21: UITD main power fault (bit 3) with normal (bit 0)
    "uitd_status": (bytes([21, 1, 0x09, *WHEN]), DataUnit(21, (UitdStatus(0x09, T),))),
    # 24: duty-check answer (bit 5) by operator 1
    "uitd_operation": (bytes([24, 1, 0x20, 1, *WHEN]), DataUnit(24, (UitdOperation(0x20, 1, T),))),
    "uitd_time": (bytes([28, 1, *WHEN]), DataUnit(28, (UitdTime(T),))),
    "clock_sync": (bytes([90, 1, *WHEN]), DataUnit(90, (ClockSync(T),))),
    "duty_check": (bytes([91, 1, 10]), DataUnit(91, (DutyCheck(10),))),
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_fixed_vectors_decode_and_encode_back(name: str) -> None:
    adu, unit = VECTORS[name]
    command = Command.CONTROL if unit.type_flag >= 90 else Command.SEND
    raw = frame_bytes(0x1234, command, adu)
    frame = decode_frame(raw)
    assert frame.serial == 0x1234
    assert frame.version == (1, 0)
    assert frame.source == UITD
    assert frame.command == command
    assert frame.time == T
    assert decode_unit(frame.adu) == unit
    assert encode_unit(unit.objects) == adu
    assert encode_frame(frame) == raw


def test_heartbeat_and_confirm_have_empty_data() -> None:
    raw = frame_bytes(7, Command.SEND, b"")
    assert len(raw) == 30
    frame = decode_frame(raw)
    assert frame.adu == b""
    assert encode_frame(Frame(7, (1, 0), T, UITD, CENTRE, Command.SEND)) == raw


def test_several_objects_and_zero_objects() -> None:
    two = bytes([21, 2, 0x01, *WHEN, 0x03, *WHEN])
    assert decode_unit(two) == DataUnit(21, (UitdStatus(1, T), UitdStatus(3, T)))
    assert decode_unit(bytes([2, 0])) == DataUnit(2, ())


def test_component_address_reads_zone_then_position() -> None:
    status = VECTORS["component_status"][1].objects[0]
    assert isinstance(status, ComponentStatus)
    assert (status.zone, status.position) == (10, 2)


def test_time_label_is_local_time_of_the_community() -> None:
    shanghai = T.to_datetime(ZoneInfo("Asia/Shanghai"))
    assert shanghai == datetime.fromisoformat("2026-12-03T01:58:02+00:00")
    with pytest.raises(ValueError, match="month"):
        TimeLabel(0, 0, 0, 1, 13, 26).to_datetime(ZoneInfo("Asia/Shanghai"))


def test_unit_layout_errors_and_unsupported_types() -> None:
    with pytest.raises(UnitError, match="need 10 bytes, got 9"):
        decode_unit(bytes([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(UnitError):
        decode_unit(b"\x01")
    assert decode_unit(bytes([25, 1, 1, 2])) == Unsupported(25, bytes([25, 1, 1, 2]))


def test_bad_checksum_length_and_end() -> None:
    raw = bytearray(frame_bytes(1, Command.SEND, bytes([28, 1, *WHEN])))
    bad_sum = bytes(raw[:-3]) + bytes([(raw[-3] + 1) % 256]) + b"##"
    with pytest.raises(FrameError) as caught:
        decode_frame(bad_sum)
    assert caught.value.fault is FrameFault.BAD_CHECKSUM
    assert caught.value.raw == bad_sum
    assert caught.value.header is not None
    assert caught.value.header.serial == 1
    bad_end = bytes(raw[:-1]) + b"$"
    with pytest.raises(FrameError) as caught:
        decode_frame(bad_end)
    assert caught.value.fault is FrameFault.BAD_END
    too_long = bytearray(raw)
    too_long[24:26] = (1025).to_bytes(2, "little")
    with pytest.raises(FrameError) as caught:
        decode_frame(bytes(too_long))
    assert caught.value.fault is FrameFault.BAD_LENGTH


def test_stream_split_merged_and_garbage() -> None:
    a = frame_bytes(1, Command.SEND, bytes([28, 1, *WHEN]))
    b = frame_bytes(2, Command.SEND, b"")
    decoder = StreamDecoder()
    stream = b"xx@" + a + b + b"\x00@@" + b
    out: list[Frame | FrameError] = []
    for i in range(0, len(stream), 7):
        out += decoder.feed(stream[i : i + 7])
    frames = [f.serial for f in out if isinstance(f, Frame)]
    assert frames == [1, 2, 2]
    faults = {e.fault for e in out if isinstance(e, FrameError)}
    assert faults <= {FrameFault.GARBAGE, FrameFault.BAD_LENGTH, FrameFault.BAD_END}
    assert decoder.pending == 0


def test_stray_start_with_huge_length_does_not_stall() -> None:
    good = frame_bytes(9, Command.SEND, b"")
    stray = b"@@" + bytes(22) + b"\xff\xff" + b"\x02"
    out = StreamDecoder().feed(stray + good)
    assert [f.serial for f in out if isinstance(f, Frame)] == [9]
    assert any(isinstance(e, FrameError) and e.fault is FrameFault.BAD_LENGTH for e in out)


def test_incomplete_frame_superseded_by_a_complete_one() -> None:
    good = frame_bytes(5, Command.SEND, b"")
    # A start whose length says 500 bytes, then a whole frame: waiting would hold it.
    stray = b"@@" + bytes(22) + (500).to_bytes(2, "little") + b"\x02"
    out = StreamDecoder().feed(stray + good)
    assert [f.serial for f in out if isinstance(f, Frame)] == [5]


# -- properties --------------------------------------------------------------------

byte = st.integers(0, 255)
word = st.integers(0, 0xFFFF)
dword = st.integers(0, 0xFFFFFFFF)
address = st.binary(min_size=6, max_size=6)
labels = st.builds(
    TimeLabel,
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 23),
    st.integers(1, 28),
    st.integers(1, 12),
    st.integers(0, 99),
)
frames = st.builds(
    Frame, word, st.tuples(byte, byte), labels, address, address, byte, st.binary(max_size=1024)
)


@settings(max_examples=60)
@given(frames)
def test_round_trip(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


def _one_to_eight(objects: st.SearchStrategy[DataObject]) -> st.SearchStrategy[list[DataObject]]:
    return st.lists(objects, min_size=1, max_size=8)


component_description = st.text(alphabet="探测器火警区号ABC 12", max_size=10).map(str.strip)
units = st.one_of(
    _one_to_eight(st.builds(SystemStatus, byte, byte, word, labels)),
    _one_to_eight(
        st.builds(ComponentStatus, byte, byte, byte, dword, word, component_description, labels)
    ),
    _one_to_eight(
        st.builds(
            ComponentAnalog, byte, byte, byte, dword, byte, st.integers(-32768, 32767), labels
        )
    ),
)


@settings(max_examples=60)
@given(units)
def test_unit_round_trip(objects: list[DataObject]) -> None:
    adu = encode_unit(objects)
    decoded = decode_unit(adu)
    assert isinstance(decoded, DataUnit)
    assert list(decoded.objects) == objects


@given(st.binary(max_size=300))
def test_unit_decoder_raises_only_its_error(adu: bytes) -> None:
    with contextlib.suppress(UnitError):
        decode_unit(adu)


# Noise rich in start and end markers and small lengths, where resync goes wrong.
noise = st.lists(
    st.one_of(
        st.sampled_from([b"@@", b"##", b"@", b"\x00\x00", b"\x01\x04"]), st.binary(max_size=40)
    ),
    max_size=40,
).map(b"".join)


@settings(max_examples=150)
@given(noise, st.lists(st.integers(1, 64), max_size=40))
def test_stream_decoder_never_raises(data: bytes, cuts: list[int]) -> None:
    decoder = StreamDecoder()
    at = 0
    for size in [*cuts, len(data)]:
        for item in decoder.feed(data[at : at + size]):
            assert isinstance(item, Frame | FrameError)
        at += size


@settings(max_examples=150)
@given(noise, frames, st.lists(st.integers(1, 50), max_size=30))
def test_no_valid_frame_lost_after_garbage(garbage: bytes, frame: Frame, cuts: list[int]) -> None:
    raw = encode_frame(frame)
    stream = garbage + raw
    decoder = StreamDecoder()
    out: list[Frame | FrameError] = []
    at = 0
    for size in [*cuts, len(stream)]:
        out += decoder.feed(stream[at : at + size])
        at += size
    assert frame in [f for f in out if isinstance(f, Frame)]
