"""Faults on demand: the broken, repeated, late and skewed messages real fleets send.

Each kind is a function of one registered device and the current time that
returns a ``Fault``: the messages to publish (topic and raw payload) and what a
correct platform does with them, either a dead letter with a stated reason or
stored content (a duplicate stored once, a late reading stored as it is). The
messages start from a genuine sample of the device's model, so the one thing
wrong with them is the fault. ``disconnect_no_will`` is a connection fault:
its device connects without a Will, says it is online and drops the socket.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import orjson

from core.errors import RejectReason
from core.metric_catalog import METRICS
from core.models import Device
from core.topics import Channel, device_topic
from simulators.devices import build_model
from simulators.fleet import ONLINE, event_payload, telemetry_payload
from simulators.model import Metrics, SimEvent

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "FaultMessage", "build_fault", "unknown_device_id"]

# Past the gateway's 64 KiB default (SC_VALIDATION__MAX_PAYLOAD_BYTES) with room.
OVERSIZED_BYTES = 80 * 1024
# Skews a device clock drifts or a wrong time zone puts on it: all inside the
# 24 h the gateway accepts ahead, so all stored (domain.md 3: device time is kept).
SKEWS = (
    timedelta(minutes=5),
    timedelta(hours=3),
    timedelta(minutes=-7),
    timedelta(hours=-8),  # a device set to UTC instead of Asia/Shanghai
)
# Ahead by more than a day: refused (Alibaba IoT's rule, and ours).
FAR_AHEAD = timedelta(hours=25)
# A reading that sat in a device or broker queue this long before arriving.
LATE_BY = timedelta(hours=2)
# A device back from an outage replays this much of its buffer, a reading per
# BURST_STEP (or per its own interval if that is shorter).
BURST_SPAN = timedelta(hours=1)
BURST_STEP = timedelta(minutes=1)
# How far apart the out-of-order readings were taken.
OUT_OF_ORDER_STEP = timedelta(seconds=30)
OUT_OF_ORDER_COUNT = 5
# A resend re-stamped by the device this much later, with the same seq.
RESTAMP = timedelta(seconds=2)


class FaultKind(StrEnum):
    MALFORMED_JSON = "malformed_json"
    WRONG_TYPES = "wrong_types"
    NAN = "nan"
    OVERSIZED = "oversized"
    UNKNOWN_DEVICE = "unknown_device"
    OUT_OF_RANGE = "out_of_range"
    UNKNOWN_METRIC = "unknown_metric"
    BAD_TOPIC = "bad_topic"
    CLASS_MISMATCH = "class_mismatch"
    SECONDS_NOT_MS = "seconds_not_ms"
    CLOCK_FAR_AHEAD = "clock_far_ahead"
    CLOCK_SKEW = "clock_skew"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    LATE = "late"
    BURST = "burst"
    DISCONNECT_NO_WILL = "disconnect_no_will"


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultMessage:
    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """What to publish, and what the platform must make of it.

    ``reason`` set: every message is a dead letter with that reason. Otherwise
    ``stored`` distinct readings times (telemetry messages) end up stored for
    ``device_id`` and nothing is dead-lettered.
    """

    kind: FaultKind
    device_id: str
    description: str
    messages: tuple[FaultMessage, ...]
    reason: RejectReason | None = None
    stored: int = 0
    # Connection fault: connect as the device without a Will, publish the
    # messages (a retained online status), then drop the socket.
    drop_connection: bool = False

    @property
    def dead_letters(self) -> int:
        return len(self.messages) if self.reason is not None else 0


def unknown_device_id(device: Device) -> str:
    """An id next to ``device``'s that no registry holds."""
    return f"{device.id[:54]}-unknown"


@dataclass(slots=True)
class _Source:
    """A device, its model and its counter: genuine samples to break."""

    device: Device
    now: datetime
    seq: int
    seed: int

    def topic(self, channel: Channel = Channel.TELEMETRY, *, device_id: str | None = None) -> str:
        d = self.device
        return device_topic(d.community_id, d.device_class, device_id or d.id, channel)

    def metrics(self, at: datetime | None = None) -> Metrics:
        model = build_model(self.device, seed=self.seed, incident_scale=0.0)
        return model.sample(at or self.now).metrics

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def telemetry(self, at: datetime, *, seq: int | None = None) -> bytes:
        seq = self.next_seq() if seq is None else seq
        return telemetry_payload(ts_ms=_ms(at), seq=seq, metrics=self.metrics(at))

    def envelope(self, **fields: object) -> bytes:
        """A telemetry envelope with ``fields`` replacing the genuine ones."""
        body: dict[str, object] = {
            "ts": _ms(self.now),
            "seq": self.next_seq(),
            "metrics": self.metrics(),
        }
        body.update(fields)
        return orjson.dumps(body)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _message(topic: str, payload: bytes) -> FaultMessage:
    return FaultMessage(topic=topic, payload=payload)


def _on_telemetry(
    src: _Source,
    kind: FaultKind,
    text: str,
    payloads: Iterable[bytes],
    *,
    reason: RejectReason | None = None,
    stored: int = 0,
) -> Fault:
    """A fault whose ``payloads`` go to the device's own telemetry topic."""
    return Fault(
        kind=kind,
        device_id=src.device.id,
        description=text,
        messages=tuple(_message(src.topic(), p) for p in payloads),
        reason=reason,
        stored=stored,
    )


def _dead(
    src: _Source, kind: FaultKind, reason: RejectReason, text: str, *payloads: bytes
) -> Fault:
    return _on_telemetry(src, kind, text, payloads, reason=reason)


def _misrouted(
    src: _Source,
    kind: FaultKind,
    reason: RejectReason,
    text: str,
    topic: str,
    *,
    device_id: str | None = None,
) -> Fault:
    """The device's telemetry, well formed, on ``topic``: a dead letter for ``reason``."""
    return Fault(
        kind=kind,
        device_id=device_id or src.device.id,
        description=text,
        messages=(_message(topic, src.telemetry(src.now)),),
        reason=reason,
    )


def _malformed_json(src: _Source) -> Fault:
    whole = src.telemetry(src.now)
    return _dead(
        src,
        FaultKind.MALFORMED_JSON,
        RejectReason.BAD_JSON,
        "JSON cut off mid-message, and bytes that are not UTF-8 at all",
        whole[: len(whole) // 2],
        b"\xff\xfe\x00garbage",
    )


def _wrong_types(src: _Source) -> Fault:
    metrics = src.metrics()
    as_text = {name: str(value) for name, value in metrics.items()}
    return _dead(
        src,
        FaultKind.WRONG_TYPES,
        RejectReason.BAD_PAYLOAD,
        "numbers sent as strings, a seq that is a string, metrics as a list",
        src.envelope(metrics=as_text),
        src.envelope(seq=str(src.next_seq())),
        src.envelope(metrics=list(metrics.items())),
    )


def _nan(src: _Source) -> Fault:
    name = next(iter(src.metrics()))
    payloads = [
        # orjson cannot write NaN: splice the literal into a genuine envelope.
        src.envelope(metrics={name: 0.5}).replace(b"0.5", literal, 1)
        for literal in (b"NaN", b"Infinity", b"-Infinity")
    ]
    return _dead(
        src,
        FaultKind.NAN,
        RejectReason.NOT_FINITE,
        f"{name} as NaN, Infinity and -Infinity",
        *payloads,
    )


def _oversized(src: _Source) -> Fault:
    padding = "x" * OVERSIZED_BYTES
    event = SimEvent(name="diagnostics_dump", data={"blob": padding})
    payload = event_payload(ts_ms=_ms(src.now), seq=src.next_seq(), event=event)
    return Fault(
        kind=FaultKind.OVERSIZED,
        device_id=src.device.id,
        description=f"a {len(payload) // 1024} KiB diagnostics event",
        messages=(_message(src.topic(Channel.EVENT), payload),),
        reason=RejectReason.PAYLOAD_TOO_LARGE,
    )


def _unknown_device(src: _Source) -> Fault:
    ghost = unknown_device_id(src.device)
    return _misrouted(
        src,
        FaultKind.UNKNOWN_DEVICE,
        RejectReason.UNKNOWN_DEVICE,
        f"well-formed telemetry from {ghost}, which is not registered",
        src.topic(device_id=ghost),
        device_id=ghost,
    )


def _out_of_range(src: _Source) -> Fault:
    spec = next(iter(METRICS[src.device.device_class].values()))
    return _dead(
        src,
        FaultKind.OUT_OF_RANGE,
        RejectReason.OUT_OF_RANGE,
        f"{spec.name} beyond its physical range [{spec.low:g}, {spec.high:g}]",
        src.envelope(metrics={spec.name: spec.high + abs(spec.high - spec.low) + 1}),
    )


def _unknown_metric(src: _Source) -> Fault:
    text = "a metric the device's class does not report"
    payload = src.envelope(metrics={"flux_capacitance": 1.21})
    return _dead(src, FaultKind.UNKNOWN_METRIC, RejectReason.UNKNOWN_METRIC, text, payload)


def _bad_topic(src: _Source) -> Fault:
    topic = src.topic().rsplit("/", 1)[0] + "/telemetry_v2"
    text = "a channel the contract does not have"
    return _misrouted(src, FaultKind.BAD_TOPIC, RejectReason.BAD_TOPIC, text, topic)


def _class_mismatch(src: _Source) -> Fault:
    d = src.device
    other = "fire" if d.device_class != "fire" else "wearable"
    topic = device_topic(d.community_id, other, d.id, Channel.TELEMETRY)
    return _misrouted(
        src,
        FaultKind.CLASS_MISMATCH,
        RejectReason.CLASS_MISMATCH,
        f"the device's telemetry on a {other} topic",
        topic,
    )


def _seconds_not_ms(src: _Source) -> Fault:
    text = "epoch seconds where milliseconds belong (a date in January 1970)"
    payload = src.envelope(ts=int(src.now.timestamp()))
    return _dead(src, FaultKind.SECONDS_NOT_MS, RejectReason.BAD_PAYLOAD, text, payload)


def _clock_far_ahead(src: _Source) -> Fault:
    ahead = src.now + FAR_AHEAD
    return _dead(
        src,
        FaultKind.CLOCK_FAR_AHEAD,
        RejectReason.FUTURE_TIMESTAMP,
        f"a device clock {FAR_AHEAD.total_seconds() / 3600:g} h ahead, ms and ISO 8601",
        src.telemetry(ahead),
        src.envelope(ts=ahead.isoformat()),
    )


def _clock_skew(src: _Source) -> Fault:
    payloads = [src.telemetry(src.now + skew) for skew in SKEWS]
    text = ", ".join(f"{skew.total_seconds() / 60:+g} min" for skew in SKEWS)
    return _on_telemetry(
        src, FaultKind.CLOCK_SKEW, f"device clocks off by {text}", payloads, stored=len(SKEWS)
    )


def _duplicate(src: _Source) -> Fault:
    first_at = src.now - timedelta(seconds=10)
    seq = src.next_seq()
    first = src.telemetry(first_at, seq=seq)
    # Same seq, re-stamped: a device that resends after a lost PUBACK.
    restamped = src.telemetry(first_at + RESTAMP, seq=seq)
    # No seq at all: only device time and metric tell the copies apart.
    unnumbered = orjson.dumps({"ts": _ms(src.now), "metrics": src.metrics()})
    payloads = [first, first, restamped, unnumbered, unnumbered]
    text = "an exact resend, a re-stamped resend with the same seq, a resend without seq"
    return _on_telemetry(src, FaultKind.DUPLICATE, text, payloads, stored=2)


def _out_of_order(src: _Source) -> Fault:
    times = [src.now - OUT_OF_ORDER_STEP * i for i in range(OUT_OF_ORDER_COUNT)]
    payloads = [src.telemetry(at) for at in sorted(times)]
    random.Random(src.seed).shuffle(payloads)  # noqa: S311 - simulation, not secrets
    return _on_telemetry(
        src,
        FaultKind.OUT_OF_ORDER,
        f"{OUT_OF_ORDER_COUNT} readings {OUT_OF_ORDER_STEP.seconds} s apart, sent shuffled",
        payloads,
        stored=OUT_OF_ORDER_COUNT,
    )


def _late(src: _Source) -> Fault:
    payloads = [src.telemetry(src.now), src.telemetry(src.now - LATE_BY)]
    text = f"a current reading, then one taken {LATE_BY.total_seconds() / 3600:g} h ago"
    return _on_telemetry(src, FaultKind.LATE, text, payloads, stored=2)


def _burst(src: _Source) -> Fault:
    step = min(BURST_STEP, timedelta(seconds=src.device.expected_interval_s))
    count = int(BURST_SPAN / step)
    model = build_model(src.device, seed=src.seed, incident_scale=0.0)
    payloads = []
    for i in range(count, 0, -1):
        at = src.now - step * i
        payloads.append(
            telemetry_payload(ts_ms=_ms(at), seq=src.next_seq(), metrics=model.sample(at).metrics)
        )
    text = f"an hour of buffered readings ({count}) replayed at once after a reconnect"
    return _on_telemetry(src, FaultKind.BURST, text, payloads, stored=count)


def _disconnect_no_will(src: _Source) -> Fault:
    return Fault(
        kind=FaultKind.DISCONNECT_NO_WILL,
        device_id=src.device.id,
        description="connects without a Last Will, says it is online, then its link dies",
        messages=(
            FaultMessage(topic=src.topic(Channel.STATUS), payload=ONLINE, retain=True),
            _message(src.topic(), src.telemetry(src.now)),
        ),
        stored=1,
        drop_connection=True,
    )


_BUILDERS: dict[FaultKind, Callable[[_Source], Fault]] = {
    FaultKind.MALFORMED_JSON: _malformed_json,
    FaultKind.WRONG_TYPES: _wrong_types,
    FaultKind.NAN: _nan,
    FaultKind.OVERSIZED: _oversized,
    FaultKind.UNKNOWN_DEVICE: _unknown_device,
    FaultKind.OUT_OF_RANGE: _out_of_range,
    FaultKind.UNKNOWN_METRIC: _unknown_metric,
    FaultKind.BAD_TOPIC: _bad_topic,
    FaultKind.CLASS_MISMATCH: _class_mismatch,
    FaultKind.SECONDS_NOT_MS: _seconds_not_ms,
    FaultKind.CLOCK_FAR_AHEAD: _clock_far_ahead,
    FaultKind.CLOCK_SKEW: _clock_skew,
    FaultKind.DUPLICATE: _duplicate,
    FaultKind.OUT_OF_ORDER: _out_of_order,
    FaultKind.LATE: _late,
    FaultKind.BURST: _burst,
    FaultKind.DISCONNECT_NO_WILL: _disconnect_no_will,
}
FAULT_KINDS: tuple[FaultKind, ...] = tuple(_BUILDERS)


def build_fault(
    kind: FaultKind | str,
    *,
    device: Device,
    now: datetime | None = None,
    seq_start: int | None = None,
    seed: int = 0,
) -> Fault:
    """The ``kind`` fault for ``device`` at ``now`` (default: the clock).

    ``seq_start`` (default: ``now`` in ms, above any seq an earlier simulator
    run of the device used) is where the messages' counter starts.
    """
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    start = _ms(when) if seq_start is None else seq_start
    return _BUILDERS[FaultKind(kind)](_Source(device=device, now=when, seq=start, seed=seed))
