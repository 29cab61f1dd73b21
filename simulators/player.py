"""Playing a bound scenario over MQTT: the cast connects, reports, and the timeline happens.

Every cast device has a connection of its own with its Last Will on its
status topic, says it is online, and reports telemetry from its model at its
interval (incidents off: only the timeline makes things happen). Steps run at
their offsets divided by the time scale. A device that ``go``es offline has
its link cut, so the broker publishes its Will; ``silent`` disconnects without
one. A history is replayed before the timeline: first a heartbeat at the
current time (so no device looks silent while its past arrives), then every
device's past readings, oldest first, paced so that the pipeline stays caught
up. Message times are always the real clock; ``local_time`` only moves the
time of day the models live in.

Alink devices of the cast speak their product's thing model instead
(simulators/alink.py: property and event posts, no status, no Will). UITDs
connect over TCP to the fire bridge, beat at a third of their heartbeat
interval, and play their steps' incidents (simulators/uitd.py) on an event
loop of the player's own; each frame's answer is kept in ``panel_answers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, Unpack

import paho.mqtt.client as mqtt

from core.alink import PROPERTY, post_topic
from core.errors import ConfigurationError, ServiceUnavailable
from core.profiles import AlinkProduct
from core.topics import Channel, device_topic
from simulators.alink import AlinkSpeaker
from simulators.connection import BrokerAddress, Protocol, Will, connect_client, negotiate_protocol
from simulators.credentials import DeviceCredentials, address_for
from simulators.devices import build_model
from simulators.fleet import GOODBYE, OFFLINE, ONLINE, event_payload, telemetry_payload
from simulators.model import COMMUNITY_TZ, DeviceModel, Metrics, SimEvent
from simulators.population import PlacedDevice
from simulators.scenario import BoundScenario, BoundUitd, Step
from simulators.uitd import SimulatedUitd, play_incident

__all__ = ["HISTORY_STEP", "PlayOptions", "Player", "StepRecord", "utc_now"]

log = logging.getLogger(__name__)

HISTORY_STEP = "history"
# Past readings go out at most this fast: well under what the pipeline takes,
# so its queue stays short and the rule engine keeps judging absence.
HISTORY_RATE = 1_500.0
# A heartbeat carries link quality only: it touches no metric a rule watches.
HEARTBEAT = {"rssi": -75.0}
# How long the end of a run waits for the broker to confirm what was sent.
CONFIRM_TIMEOUT_S = 15.0
CONNECT_ATTEMPTS = 3
CONNECT_BACKOFF_S = 1.0


def utc_now() -> datetime:
    """The default clock: the wall clock, for runs against a real pipeline."""
    return datetime.now(UTC)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """When a step ran (wall clock), for expectations timed from it."""

    index: int
    name: str | None
    at: datetime


@dataclass(slots=True)
class _Actor:
    placed: PlacedDevice
    model: DeviceModel
    interval_s: float
    client: mqtt.Client | None = None
    seq: int = 0
    last_ms: int = 0
    reporting: bool = True
    overrides: dict[str, float] = field(default_factory=dict)
    held: dict[str, float] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)
    # What the last telemetry said: a held metric stays at this.
    last: Metrics = field(default_factory=dict)
    # An Alink device: its product's posts instead of the native envelope.
    speaker: AlinkSpeaker | None = None

    @property
    def device_id(self) -> str:
        return self.placed.device.id

    def topic(self, channel: Channel) -> str:
        d = self.placed.device
        return device_topic(d.community_id, d.device_class, d.id, channel)

    def stamp(self, at: datetime) -> int:
        """Strictly increasing per device: storage keys readings by device time."""
        ts = max(_ms(at), self.last_ms + 1)
        self.last_ms = ts
        return ts

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def metrics(self, sample: Metrics) -> Metrics:
        for name in self.hold:
            if name in sample:
                sample[name] = self.held.setdefault(name, self.last.get(name, sample[name]))
        sample.update(self.overrides)
        self.last = dict(sample)
        return sample


class PlayOptions(TypedDict, total=False):
    """How a run plays, beside its broker: ``Player``'s optional keywords, which
    ``run_scenario`` and ``run_scenarios`` pass on; each one's default follows it."""

    time_scale: float  # 1.0, at most the scenario's max_time_scale
    seed: int  # 0
    protocol: Protocol  # "auto"
    credentials: Mapping[str, DeviceCredentials] | None  # None: all log in as the URL says
    clock: Callable[[], datetime]  # utc_now
    fire_bridge: tuple[str, int] | None  # None


class Player:
    """One run of a bound scenario. ``start``, then ``advance`` until done, then ``stop``."""

    def __init__(
        self, bound: BoundScenario, *, mqtt_url: str, **options: Unpack[PlayOptions]
    ) -> None:
        time_scale = options.get("time_scale", 1.0)
        seed = options.get("seed", 0)
        clock = options.get("clock", utc_now)
        if not time_scale >= 1.0:
            raise ValueError("time scale must be at least 1")
        self.bound = bound
        self.scenario = bound.scenario
        self.time_scale = min(time_scale, self.scenario.max_time_scale)
        self._address = BrokerAddress.parse(mqtt_url)
        self._protocol: Protocol = options.get("protocol", "auto")
        self._credentials = options.get("credentials") or {}
        # Stamps every message (and, in a run, the verdict).
        self.clock = clock
        self._offset = self._model_offset(clock())
        self._actors = {
            p.device.id: _Actor(
                placed=p,
                # Seeded by the id inside the community: every run of a scenario,
                # whatever its community id, plays the same readings.
                model=build_model(
                    p.device.model_copy(update={"id": p.local_id}),
                    seed=seed,
                    incident_scale=0.0,
                    time_zone=COMMUNITY_TZ,
                ),
                interval_s=float(bound.intervals[p.device.id]),
                speaker=_speaker(bound.products.get(p.device.id)),
            )
            for p in bound.cast
        }
        self._fire_bridge = options.get("fire_bridge")
        self._panels = _Panels(bound.uitds) if bound.uitds else None
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self._lock = threading.Lock()
        self.steps: list[StepRecord] = []
        self.started_at: datetime | None = None
        self._last_step_mono = 0.0
        self.messages = 0

    # -- time --------------------------------------------------------------------------

    def _model_offset(self, now: datetime) -> timedelta:
        """Shift that puts the models at ``local_time`` today (never ahead of the clock)."""
        local_time = self.scenario.local_time
        if local_time is None:
            return timedelta(0)
        hour, minute = map(int, local_time.split(":"))
        local = now.astimezone(COMMUNITY_TZ)
        target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
        return -((local - target) % timedelta(days=1))

    def model_time(self, at: datetime) -> datetime:
        """The time the device models live in when the clock says ``at``."""
        return at + self._offset

    @property
    def timeline_end_s(self) -> float:
        """Wall seconds from the start to the last step."""
        return max((s.at for s in self.scenario.timeline), default=0.0) / self.time_scale

    # -- publishing --------------------------------------------------------------------

    def _publish(
        self, actor: _Actor, channel: Channel, payload: bytes, *, retain: bool = False
    ) -> None:
        if actor.client is None:
            return  # offline: a device without a link sends nothing
        info = actor.client.publish(actor.topic(channel), payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ServiceUnavailable("mqtt", f"publish for {actor.device_id}: rc {info.rc}")
        with self._lock:
            self._pending.append(info)
            self.messages += 1

    def _telemetry(self, actor: _Actor) -> None:
        now = self.clock()
        sample = actor.model.sample(self.model_time(now))
        ts = actor.stamp(now)
        metrics = actor.metrics(dict(sample.metrics))
        if actor.speaker is not None:
            body = actor.speaker.property_post(actor.next_seq(), metrics)
            if body is not None:
                self._post(actor, PROPERTY, body)
            for event in sample.events:
                self._event(actor, event)
            return
        self._publish(
            actor,
            Channel.TELEMETRY,
            telemetry_payload(ts_ms=ts, seq=actor.next_seq(), metrics=metrics),
        )
        for event in sample.events:
            self._event(actor, event)

    def _post(self, actor: _Actor, identifier: str, body: bytes) -> None:
        assert actor.speaker is not None
        if actor.client is None:
            return
        topic = post_topic(actor.speaker.product.product_key, actor.device_id, identifier)
        info = actor.client.publish(topic, body, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise ServiceUnavailable("mqtt", f"publish for {actor.device_id}: rc {info.rc}")
        with self._lock:
            self._pending.append(info)
            self.messages += 1

    def _event(self, actor: _Actor, event: SimEvent) -> None:
        ts = actor.stamp(self.clock())
        if actor.speaker is not None:
            found = actor.speaker.event_post(actor.next_seq(), event, ts)
            if found is None:
                raise ConfigurationError(
                    f"{actor.placed.local_id}: product {actor.speaker.product.product_key}"
                    f" has no event for {event.name!r}"
                )
            self._post(actor, *found)
            return
        self._publish(
            actor, Channel.EVENT, event_payload(ts_ms=ts, seq=actor.next_seq(), event=event)
        )

    def _connect(self, actor: _Actor) -> None:
        # A device whose CONNECT goes unanswered tries again, as hardware does: a
        # busy broker (every scenario's cast connecting at once) is no verdict.
        alink = actor.speaker is not None
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                actor.client = connect_client(
                    address_for(self._address, actor.device_id, self._credentials),
                    client_id=actor.device_id,
                    # An Alink device has no status topic: no Will, no online status.
                    will=None
                    if alink
                    else Will(topic=actor.topic(Channel.STATUS), payload=OFFLINE),
                    protocol=self._protocol,
                )
                break
            except ServiceUnavailable as exc:
                if attempt == CONNECT_ATTEMPTS:
                    raise
                log.warning("%s: %s; connecting again", actor.device_id, exc)
                time.sleep(attempt * CONNECT_BACKOFF_S)
        if not alink:
            self._publish(actor, Channel.STATUS, ONLINE, retain=True)

    def _drop(self, actor: _Actor, *, will: bool) -> None:
        client, actor.client = actor.client, None
        if client is None:
            return
        if not will:
            client.disconnect()  # a clean DISCONNECT: the broker discards the Will
            client.loop_stop()
            return
        client.loop_stop()  # no DISCONNECT from paho's thread: the link just dies
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- the run ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect the cast, say online, replay the history; the timeline starts after."""
        if self._protocol == "auto":
            self._protocol = negotiate_protocol(
                self._address, client_id=f"{self.bound.community.id}-probe"
            )
        try:
            for actor in self._actors.values():
                self._connect(actor)
                # Alink ids are at most 4294967295: count from 1, not from the clock.
                actor.seq = 0 if actor.speaker is not None else _ms(self.clock())
            if self._panels is not None:
                self._panels.start(self._fire_bridge)
            if self.scenario.history is not None:
                self._replay_history()
        except BaseException:
            self.stop(clean=False)
            raise
        self.started_at = self.clock()
        start = time.monotonic()
        for actor in self._actors.values():
            self._schedule(start, self._reporter(actor))
        if self._panels is not None:
            for uitd in self.bound.uitds.values():
                self._schedule(start, self._beater(uitd))
        for index, step in enumerate(self.scenario.timeline):
            self._schedule(start + step.at / self.time_scale, self._step_runner(index, step))
        self._last_step_mono = start + self.timeline_end_s

    def advance(self, until_mono: float) -> None:
        """Run what is due up to ``until_mono`` (time.monotonic), sleeping in between."""
        while True:
            now = time.monotonic()
            if self._queue and self._queue[0][0] <= now:
                _, _, action = heapq.heappop(self._queue)
                action()
                continue
            wake = min(self._queue[0][0] if self._queue else until_mono, until_mono)
            if wake > now:
                time.sleep(min(wake - now, 0.5))
                continue
            if now >= until_mono:
                return

    def timeline_done(self) -> bool:
        return len(self.steps) == len(self.scenario.timeline)

    def stop(self, *, clean: bool = True) -> None:
        """Offline statuses for devices still connected, PUBACKs awaited, links closed."""
        for actor in self._actors.values():
            if actor.client is not None and clean and actor.speaker is None:
                self._publish(actor, Channel.STATUS, GOODBYE, retain=True)
        if clean:
            self.flush()
        if self._panels is not None:
            self._panels.stop(wait_s=CONFIRM_TIMEOUT_S if clean else 0.0)
        for actor in self._actors.values():
            client, actor.client = actor.client, None
            if client is not None:
                client.disconnect()
                client.loop_stop()

    def flush(self) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        with self._lock:
            pending, self._pending = self._pending, []
        for info in pending:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))

    # -- scheduling ---------------------------------------------------------------------

    def _schedule(self, due: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (due, next(self._order), action))

    def _reporter(self, actor: _Actor) -> Callable[[], None]:
        def report() -> None:
            if actor.reporting:
                self._telemetry(actor)
                self._schedule(time.monotonic() + actor.interval_s, report)

        return report

    def _beater(self, uitd: BoundUitd) -> Callable[[], None]:
        every = uitd.spec.heartbeat / 3

        def beat() -> None:
            assert self._panels is not None
            if self._panels.heartbeat(uitd.spec.id):
                self._schedule(time.monotonic() + every, beat)

        return beat

    @property
    def panel_answers(self) -> list[tuple[str, str, int | None]]:
        """(UITD, incident, the centre's answer per frame: 3 confirm, 6 deny, None none)."""
        return [] if self._panels is None else list(self._panels.answers)

    def _step_runner(self, index: int, step: Step) -> Callable[[], None]:
        def run() -> None:
            self.steps.append(StepRecord(index=index, name=step.name, at=self.clock()))
            log.info("%s: step %d at %gs %s", self.scenario.name, index + 1, step.at, step.note)
            if step.incident is not None:
                assert self._panels is not None
                assert step.device is not None
                self._panels.play(step.device, step.incident)
                return
            for placed in self.bound.targets(step):
                self._apply(step, self._actors[placed.device.id])
            for n in range(1, step.repeat):
                self._schedule(
                    time.monotonic() + n * step.every / self.time_scale, self._again(step)
                )

        return run

    def _again(self, step: Step) -> Callable[[], None]:
        def run() -> None:
            assert step.event is not None
            for placed in self.bound.targets(step):
                self._event(
                    self._actors[placed.device.id], SimEvent(name=step.event, data=step.data)
                )

        return run

    def _apply(self, step: Step, actor: _Actor) -> None:
        if step.go in ("offline", "silent"):
            actor.reporting = False
            self._drop(actor, will=step.go == "offline")
            return
        if step.go == "online" and actor.client is None:
            self._connect(actor)
            if not actor.reporting:
                actor.reporting = True
                self._schedule(time.monotonic() + actor.interval_s, self._reporter(actor))
        for name in step.unset:
            actor.overrides.pop(name, None)
        actor.overrides.update({k: float(v) for k, v in step.set.items()})
        for name in step.hold:
            actor.hold.add(name)
        if step.event is not None:
            self._event(actor, SimEvent(name=step.event, data=step.data))
        if step.set or step.unset or step.hold or step.telemetry or step.go == "online":
            self._telemetry(actor)

    # -- history ------------------------------------------------------------------------

    def _replay_history(self) -> None:
        history = self.scenario.history
        assert history is not None
        now = self.clock()
        chosen = set(history.devices) or {p.local_id for p in self.bound.cast}
        actors = [
            a
            for a in self._actors.values()
            if a.placed.local_id in chosen and a.speaker is None  # native devices only
        ]
        held = {m: float(v) for m, v in history.set.items()}
        messages: list[tuple[int, _Actor, Channel, bytes]] = []
        for actor in actors:
            # Alive now, first: its past then arrives as late data, not as silence.
            self._publish(
                actor,
                Channel.TELEMETRY,
                telemetry_payload(
                    ts_ms=actor.stamp(now), seq=actor.next_seq(), metrics=dict(HEARTBEAT)
                ),
            )
            every = history.every or actor.interval_s
            steps = int(history.span // every)
            for k in range(steps, 0, -1):
                at = now - timedelta(seconds=k * every)
                sample = actor.model.sample(self.model_time(at))
                metrics = {**sample.metrics, **held}
                ts = _ms(at)
                seq = actor.next_seq()
                payload = telemetry_payload(ts_ms=ts, seq=seq, metrics=metrics)
                messages.append((ts, actor, Channel.TELEMETRY, payload))
                for n, event in enumerate(sample.events, start=1):
                    payload = event_payload(ts_ms=ts + n, seq=actor.next_seq(), event=event)
                    messages.append((ts + n, actor, Channel.EVENT, payload))
            # What held through the past still holds now, until a step unsets it.
            actor.overrides.update(held)
        messages.sort(key=lambda m: m[0])
        started = time.monotonic()
        for count, (_, actor, channel, payload) in enumerate(messages):
            due = started + count / HISTORY_RATE
            time.sleep(max(0.0, due - time.monotonic()))  # the clock moves between two reads
            self._publish(actor, channel, payload)
        self.flush()
        self.steps.append(StepRecord(index=-1, name=HISTORY_STEP, at=self.clock()))
        log.info("%s: replayed %d past messages", self.scenario.name, len(messages))


def _speaker(product: AlinkProduct | None) -> AlinkSpeaker | None:
    return None if product is None else AlinkSpeaker(product)


class _Panels:
    """The scenario's UITDs on an event loop in a thread of their own."""

    def __init__(self, uitds: Mapping[str, BoundUitd]) -> None:
        self._uitds = uitds
        self._sims: dict[str, SimulatedUitd] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="uitds", daemon=True)
        self._pending: list[Future[object]] = []
        self._closed: set[str] = set()
        self.answers: list[tuple[str, str, int | None]] = []

    def _submit(self, coroutine: Any) -> Future[Any]:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        self._pending.append(future)
        return future

    def start(self, bridge: tuple[str, int] | None) -> None:
        if bridge is None:
            raise ConfigurationError("the scenario has UITDs: give it a fire bridge")
        host, port = bridge
        self._thread.start()
        for local, uitd in self._uitds.items():
            sim = SimulatedUitd(host, port, uitd.address)
            self._sims[local] = sim
            try:
                self._submit(sim.connect()).result(CONNECT_BACKOFF_S * 10)
            except (OSError, TimeoutError) as exc:
                raise ServiceUnavailable("fire-bridge", f"{host}:{port}: {exc}") from exc

    def heartbeat(self, local: str) -> bool:
        """One heartbeat; False once the UITD has hung up (its link cut)."""
        if local in self._closed:
            return False
        self._submit(self._sims[local].heartbeat())
        return True

    def play(self, local: str, incident: str) -> None:
        if incident == "link_cut":
            self._closed.add(local)

        async def run() -> None:
            for answer in await play_incident(self._sims[local], incident):
                self.answers.append((local, incident, answer))

        self._submit(run())

    def stop(self, *, wait_s: float) -> None:
        if not self._thread.is_alive():
            return
        deadline = time.monotonic() + wait_s
        for future in self._pending:
            with contextlib.suppress(Exception):
                future.result(max(0.0, deadline - time.monotonic()))
        for sim in self._sims.values():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(sim.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
