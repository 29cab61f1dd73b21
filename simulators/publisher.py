"""Publishing simulated devices to a broker at a paced aggregate rate.

Devices get a retained ``{"online": true}`` at start and, on a clean stop,
``{"online": false, "clean": true}`` (a goodbye, not a lost link); telemetry
and events go out with QoS 1 and count as published only once the broker
acknowledges them. Connections: ``fleet``.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from core.errors import ServiceUnavailable
from core.models import Device
from core.projection import project
from simulators.connection import BrokerAddress, Protocol
from simulators.credentials import DeviceCredentials
from simulators.devices import build_model
from simulators.fleet import (
    GOODBYE,
    ONLINE,
    PER_DEVICE_AUTO_MAX,
    PER_DEVICE_CONNECTIONS_MAX,
    Member,
    close_clients,
    connect_fleet,
    event_payload,
    telemetry_payload,
)
from simulators.model import COMMUNITY_TZ
from simulators.stats import Progress, SimulationStats

__all__ = ["Progress", "SimulationStats", "Simulator"]

log = logging.getLogger(__name__)

# Unconfirmed QoS 1 messages allowed before publishing waits for PUBACKs: about
# half a second at the best rate measured here. Bounds paho's queue, our memory
# and how stale a queued timestamp gets; larger windows measured no faster.
MAX_UNCONFIRMED = 5_000
# Paho's window of messages on the wire awaiting PUBACK. With a small window
# publish() only queues and the network thread sends as PUBACKs return; a large
# one makes every publish() build the packet and wake that thread with a
# syscall: 20 measured ~12k msg/s here, 1,000 ~7k msg/s (2 CPUs, Mosquitto).
MAX_INFLIGHT = 20
# Messages published between pacing checks at the unlimited rate.
BURST_MAX = 500
# Shortest pacing sleep; shorter sleeps overshoot and cost more than they save.
MIN_SLEEP_S = 0.002
# Each report of a device comes its interval +- this share after the last (clock
# drift and radio retries of a real fleet).
JITTER = 0.05
# How long the end of a run waits for the broker to confirm what was sent.
DRAIN_TIMEOUT_S = 30.0
_ACCEPTED = frozenset({mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN})  # NO_CONN: queued for resend


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Tally:
    """A run's counts so far; ``confirmed`` and ``refused`` are written by paho's network
    thread only (under the simulator's condition), the rest by the publishing thread."""

    telemetry: int = 0
    events: int = 0
    statuses: int = 0
    sent: int = 0  # every publish, statuses included
    confirmed: int = 0
    refused: int = 0


class Simulator:
    """Runs ``devices`` against a broker until a duration, a telemetry count, or ``stop()``.

    ``rate`` is telemetry messages a second across all devices, taken in turn;
    None means each device at its own ``expected_interval_s`` (first reports
    spread over one interval, then every interval with +-``JITTER`` so that the
    fleet does not beat in step), ``math.inf`` as fast as the broker confirms.
    Events ride along when the models produce them.
    ``seq`` counts per device from ``seq_start`` (default: the start time in ms).
    ``clock`` is read once at the start and once per telemetry message, so with
    ``rate`` set, a clock that steps on each reading and a ``seed`` fix every
    message and event, however the machine's timing falls.
    """

    def __init__(
        self,
        *,
        devices: Sequence[Device],
        mqtt_url: str,
        seed: int = 0,
        rate: float | None = None,
        duration_s: float | None = None,
        max_messages: int | None = None,
        time_zone: ZoneInfo = COMMUNITY_TZ,
        incident_scale: float = 1.0,
        protocol: Protocol = "auto",
        client_id: str | None = None,
        per_device_connections: bool | None = None,
        credentials: Mapping[str, DeviceCredentials] | None = None,
        mark_offline_on_stop: bool = True,
        progress_interval_s: float = 5.0,
        on_progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        seq_start: int | None = None,
    ) -> None:
        if not devices:
            raise ValueError("nothing to simulate: no devices")
        if rate is not None and not rate > 0:
            raise ValueError("rate must be positive (math.inf for unlimited)")
        if duration_s is not None and duration_s < 0:
            raise ValueError("duration_s must not be negative")
        if max_messages is not None and max_messages < 0:
            raise ValueError("max_messages must not be negative")
        if per_device_connections and len(devices) > PER_DEVICE_CONNECTIONS_MAX:
            raise ValueError(
                f"per-device connections: at most {PER_DEVICE_CONNECTIONS_MAX} devices"
            )
        self._address = BrokerAddress.parse(mqtt_url)
        members = [
            Member(
                device=d,
                model=build_model(d, seed=seed, time_zone=time_zone, incident_scale=incident_scale),
            )
            for d in devices
        ]
        # Interleave the classes so that any stretch of the stream looks like the whole.
        random.Random(seed).shuffle(members)  # noqa: S311 - simulation, not secrets
        self._members = members
        self._own_intervals = rate is None
        self._rng = random.Random(seed)  # noqa: S311 - simulation, not secrets
        self._rate = rate if rate is not None else sum(1 / d.expected_interval_s for d in devices)
        self._duration_s = duration_s
        self._max_messages = max_messages
        self._protocol: Protocol = protocol
        self._client_id = client_id or f"sc-sim-{uuid.uuid4().hex[:12]}"
        # Auto: a small fleet connects device by device, each with its Last Will.
        self._per_device = (
            len(devices) <= PER_DEVICE_AUTO_MAX
            if per_device_connections is None
            else per_device_connections
        )
        self._credentials = credentials
        self._mark_offline = mark_offline_on_stop
        self._progress_interval_s = progress_interval_s
        self._on_progress = on_progress
        self._clock = clock
        self._seq_start = seq_start
        self._stop = threading.Event()
        self._confirm = threading.Condition()
        self._started = False
        self._tally = _Tally()

    @property
    def rate(self) -> float:
        """Target telemetry messages a second."""
        return self._rate

    def stop(self) -> None:
        """Ask a running ``run()`` to finish; safe from any thread or a signal handler."""
        self._stop.set()

    def run(self) -> SimulationStats:
        if self._started:
            raise RuntimeError("a Simulator runs once; make a new one")
        self._started = True
        clients = connect_fleet(
            self._members,
            address=self._address,
            client_id=self._client_id,
            protocol=self._protocol,
            per_device=self._per_device,
            max_inflight=MAX_INFLIGHT,
            on_publish=self._on_publish,
            credentials=self._credentials,
        )
        # The gateway drops a (device, seq) it saw in the last few minutes; starting
        # at the clock in ms keeps a restarted simulator clear of its last run.
        seq = (
            self._seq_start
            if self._seq_start is not None
            else int(self._clock().timestamp() * 1000)
        )
        try:
            for member in self._members:
                member.seq = seq
                self._publish(member, member.status_topic, ONLINE, retain=True)
                self._tally.statuses += 1
            started = time.monotonic()
            if self._own_intervals:
                self._pace_own(started)
            else:
                self._pace(started)
            elapsed = time.monotonic() - started
            if self._mark_offline:
                for member in self._members:
                    self._publish(member, member.status_topic, GOODBYE, retain=True)
                    self._tally.statuses += 1
            self._drain()
        finally:
            close_clients(clients)
        stats = project(SimulationStats, self._tally, elapsed_s=elapsed)
        log.info("simulator done: %s", stats)
        return stats

    def _turns(self, started: float) -> Iterator[tuple[float, float]]:
        """The pacing loop's turns until stopped, past the duration or at the message
        limit, reporting progress on the way: each turn's monotonic time and how long it
        may sleep (until the deadline or the next report)."""
        limit = self._max_messages
        deadline = started + self._duration_s if self._duration_s is not None else math.inf
        next_report, last = started + self._progress_interval_s, (started, 0)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= deadline or (limit is not None and self._tally.telemetry >= limit):
                return
            if now >= next_report:
                last = self._report(now, started, last)
                next_report = now + self._progress_interval_s
            yield now, min(deadline - now, next_report - now)

    def _pace(self, started: float) -> None:
        members, count = self._members, len(self._members)
        rate, limit = self._rate, self._max_messages
        turn = 0
        for now, may_sleep in self._turns(started):
            # Message k is due k / rate seconds after the start.
            due = (
                BURST_MAX
                if math.isinf(rate)
                else int((now - started) * rate) + 1 - self._tally.telemetry
            )
            if limit is not None:
                due = min(due, limit - self._tally.telemetry)
            if due <= 0:
                wake = started + self._tally.telemetry / rate
                self._stop.wait(min(max(wake - now, MIN_SLEEP_S), may_sleep))
                continue
            for _ in range(min(due, BURST_MAX)):
                self._emit(members[turn])
                turn = (turn + 1) % count

    def _pace_own(self, started: float) -> None:
        """Each device at its own interval: a heap of (next due, member)."""
        rng, limit = self._rng, self._max_messages
        due: list[tuple[float, int]] = [
            (started + rng.uniform(0, m.device.expected_interval_s), i)
            for i, m in enumerate(self._members)
        ]
        heapq.heapify(due)
        for now, may_sleep in self._turns(started):
            if due[0][0] > now:
                self._stop.wait(max(min(due[0][0] - now, may_sleep), MIN_SLEEP_S))
                continue
            for _ in range(BURST_MAX):
                at, index = due[0]
                if at > now or (limit is not None and self._tally.telemetry >= limit):
                    break
                member = self._members[index]
                self._emit(member)
                interval = member.device.expected_interval_s
                # From the due time, not from now: a late report does not shift the rest.
                heapq.heapreplace(due, (at + interval * rng.uniform(1 - JITTER, 1 + JITTER), index))

    def _emit(self, member: Member) -> None:
        # One clock reading a message, never one a burst: how many messages share a
        # burst depends on the machine's timing, and with an injected clock a seed
        # must fix every draw. A wall-clock reading costs a few microseconds; the
        # model's step and the publish that follow cost many times more.
        wall = self._clock()
        wall_ms = int(wall.timestamp() * 1000)
        # Strictly increasing per device, telemetry and events alike: storage keys
        # readings by (device, metric, ts) and events by (device, ts, event).
        ts_ms = max(wall_ms, member.last_ms + 1)
        member.last_ms = ts_ms
        now = wall if ts_ms == wall_ms else datetime.fromtimestamp(ts_ms / 1000, UTC)
        sample = member.model.sample(now)
        payload = telemetry_payload(ts_ms=ts_ms, seq=member.seq, metrics=sample.metrics)
        member.seq += 1
        self._publish(member, member.telemetry_topic, payload)
        self._tally.telemetry += 1
        for event in sample.events:
            ts_ms = member.last_ms = ts_ms + 1
            payload = event_payload(ts_ms=ts_ms, seq=member.seq, event=event)
            member.seq += 1
            self._publish(member, member.event_topic, payload)
            self._tally.events += 1

    def _publish(self, member: Member, topic: str, payload: bytes, *, retain: bool = False) -> None:
        assert member.client is not None, "connect before publishing"
        info = member.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in _ACCEPTED:
            raise ServiceUnavailable(
                "mqtt", f"publish to {topic} failed: {mqtt.error_string(info.rc)}"
            )
        self._tally.sent += 1
        if self._tally.sent - self._tally.confirmed >= MAX_UNCONFIRMED:
            self._throttle()

    def _on_publish(self, _c: mqtt.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        # Paho's network thread, on PUBACK; the only writer of these two counters.
        with self._confirm:
            if reason.is_failure:
                self._tally.refused += 1
            self._tally.confirmed += 1
            if self._tally.sent - self._tally.confirmed < MAX_UNCONFIRMED // 2:
                self._confirm.notify_all()

    def _throttle(self) -> None:
        """Wait while too much is unconfirmed; a broker that stops acking stops us."""
        with self._confirm:
            while self._tally.sent - self._tally.confirmed >= MAX_UNCONFIRMED:
                if not self._confirm.wait(DRAIN_TIMEOUT_S):
                    raise ServiceUnavailable("mqtt", f"no PUBACK for {DRAIN_TIMEOUT_S:.0f} s")

    def _drain(self) -> None:
        with self._confirm:
            if not self._confirm.wait_for(
                lambda: self._tally.confirmed >= self._tally.sent, DRAIN_TIMEOUT_S
            ):
                log.warning(
                    "%d messages unconfirmed after %.0f s",
                    self._tally.sent - self._tally.confirmed,
                    DRAIN_TIMEOUT_S,
                )

    def _report(self, now: float, started: float, last: tuple[float, int]) -> tuple[float, int]:
        published = self._tally.telemetry + self._tally.events
        window = now - last[0]
        rate = (published - last[1]) / window if window > 0 else 0.0
        progress = project(Progress, self._tally, elapsed_s=now - started, rate=rate)
        # Whoever passed on_progress shows progress; the log has it for everyone else.
        log.log(
            logging.DEBUG if self._on_progress is not None else logging.INFO,
            "simulator: %d telemetry, %d events, %.0f msg/s",
            progress.telemetry,
            progress.events,
            progress.rate,
        )
        if self._on_progress is not None:
            self._on_progress(progress)
        return now, published
