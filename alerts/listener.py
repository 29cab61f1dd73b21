"""The engine inside the pipeline: the edges around ``Engine.evaluate``.

``AlertListener`` is a ``CommittedListener``: the pipeline's listener thread calls
``committed(accepted)`` after each commit and ``tick(now)`` a few times a
second. It evaluates, writes the alert transaction, then publishes.

Failure handling (docs/alerts.md): the readings are already committed and
acknowledged when the engine sees them, so alert changes are never dropped.
If the alert transaction fails because the database is unreachable, the
changes and the engine state wait in memory (the pipeline cannot commit
readings either, so little more arrives) and are written first on the next
call; the pipeline is never blocked by the engine. If the process dies with
changes unwritten, the device events received after the last saved watermark
are evaluated again on start; a threshold breach is seen again at the
device's next reading. A stalled pipeline (broker gone, backlog) never
declares devices offline: absence waits until intake has been healthy for a
while.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from paho.mqtt.client import topic_matches_sub

from alerts.engine import Engine
from alerts.model import (
    AlertChange,
    DeviceInfo,
    EvaluationFailure,
    Observations,
    observations,
)
from alerts.notify import MqttAlertPublisher, WebhookSender
from alerts.pack import default_rules
from alerts.rate import RateEvaluator
from alerts.state import EngineState
from alerts.store import AlertStore, Notice, StateChanges
from alerts.visit_check import VISIT_CHECK_EVERY_S, VisitCheck
from core.decode import Limits, decode
from core.directory import DeviceDirectory
from core.errors import MessageFailure, RejectedMessage, ServiceUnavailable
from core.models import DeviceEvent, DeviceStatus, Reading
from core.rules import Rule
from core.settings import AlertSettings
from core.topics import device_topic, parse_topic
from store import dead_letters as dead_letters_store
from store import device_directory, engine_progress, maintenance_windows
from store import readings as readings_store
from store import rules as rules_store
from store import webhooks as webhooks_store

__all__ = ["AlertListener", "link_statuses"]

_LOG = logging.getLogger(__name__)
# Without a shared directory (tests, tools): an unknown device re-reads at most this often.
DIRECTORY_MISS_REFRESH_S = 2.0
WATERMARK_EVERY_S = 5.0
# Engine state with no alert change to go with it (pending on-delays, hysteresis
# counters) is written at most this often: in a storm of noisy readings most of it
# is created and dropped again within seconds, and a crash then costs an on-delay
# a few seconds of progress (the breach is seen again at the next reading).
STATE_EVERY_S = 5.0
FLOOD_CHECK_EVERY_S = 10.0
# Absence is judged only after intake has been healthy this long: after an
# outage the backlog has to drain before silence means anything.
ABSENCE_GRACE_S = 60.0
# After a failed database call, ticks leave the database alone this long (doubling).
OUTAGE_BACKOFF_MIN_S = 0.5
OUTAGE_BACKOFF_MAX_S = 10.0
# Device events replayed on start, at most (a crash window is seconds, not days).
REPLAY_LIMIT = 100_000
# Replayed dead letters evaluated per look (on the reload cadence); more wait a turn.
REPLAYED_BATCH = 1_000
REPLAY_MAX_AGE = timedelta(hours=6)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Committed(Protocol):
    """What the engine reads of one committed message (``ingest.batch.Accepted``)."""

    device_id: str
    topic: str
    payload: bytes
    readings: list[Reading]
    event: DeviceEvent | None
    status: DeviceStatus | None
    received_at: datetime | None


@dataclass(slots=True)
class _Replayed:
    """A dead letter replayed into storage, as the engine reads a committed message."""

    device_id: str
    topic: str
    payload: bytes
    readings: list[Reading]
    event: DeviceEvent | None
    status: DeviceStatus | None
    received_at: datetime | None


def link_statuses(accepted: Sequence[Committed]) -> dict[str, tuple[bool, float]]:
    """The last status of each device in the batch, in the broker's order. A clean
    goodbye is no lost link: silence decides about that device from then on."""
    links: dict[str, tuple[bool, float]] = {}
    for a in accepted:
        s = a.status
        if s is None:
            continue
        if s.clean and not s.online:
            links.pop(a.device_id, None)
        else:
            links[a.device_id] = (s.online, s.received_at.timestamp())
    return links


class AlertListener:
    """Owns the engine and its state for one pipeline worker."""

    def __init__(
        self,
        *,
        store: AlertStore,
        settings: AlertSettings,
        topic_filter: str = "community/+/+/+/+",
        clock: Callable[[], datetime] = _utc_now,
        healthy: Callable[[], bool] = lambda: True,
        publisher: MqttAlertPublisher | None = None,
        webhooks: WebhookSender | None = None,
        seed: Sequence[Rule] | None = None,
        absence_grace_s: float = ABSENCE_GRACE_S,
        engine_hook: Callable[[Engine], None] | None = None,
        limits: Limits | None = None,
        directory: DeviceDirectory | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.topic_filter = topic_filter
        self.clock = clock
        self.healthy = healthy
        self.publisher = publisher
        self.webhooks = webhooks
        self._seed = default_rules() if seed is None else list(seed)
        self.engine = Engine([])
        self.state = EngineState()
        self._revision: tuple[int, int] | None = None
        self._pending: list[AlertChange] = []
        self._pending_state: StateChanges = {}
        self._saved: set[tuple[str, str]] = set()  # state rows in the database
        self._state_due = 0.0
        self._watermark: datetime | None = None
        self._watermark_saved: datetime | None = None
        self._due: dict[str, float] = {}
        self._healthy_since: float | None = None
        self.absence_grace_s = absence_grace_s
        self._engine_hook = engine_hook  # tests only (gateway.hooks)
        self.limits = limits or Limits()
        # The process's one device directory (the gateway's); one of our own without.
        self.directory = directory or DeviceDirectory(
            load_all=lambda: self.store.run(device_directory.load_all),
            load_some=lambda ids: self.store.run(lambda c: device_directory.load_some(c, ids)),
            miss_refresh_s=DIRECTORY_MISS_REFRESH_S,
        )
        self._directory_version = -1
        self._replay_cursor: int | None = None
        self.errors = 0
        self.alerts_written = 0
        self._outage_since: float | None = None
        self._retry_at = 0.0
        self._backoff = OUTAGE_BACKOFF_MIN_S
        self.visits = VisitCheck(topic_filter=topic_filter)

    # -- start and stop ---------------------------------------------------------------

    def start(
        self,
        spawn: Callable[..., threading.Thread] | None = None,
        beat: Callable[[str], None] | None = None,
    ) -> None:
        """Seed rules on a fresh database, load everything, restore state, replay the gap.

        ``spawn`` and ``beat`` (the pipeline's supervisor) run the webhook thread."""
        now = self.clock().timestamp()
        self.store.open()
        seeded = self.store.run(lambda conn: rules_store.seed_rules(conn, self._seed))
        if seeded:
            _LOG.info("installed %d default alert rules", seeded)
        self._load_rules(force=True)
        self._load_directory(initial=True)
        self._reload_maintenance(now)
        self._rebuild_windows(now)
        self._replay()
        self._replay_cursor = self.store.replay_cursor()
        if self._replay_cursor is None:  # first start: replays from now on
            self._replay_cursor = self.store.run(dead_letters_store.replays_end)
            self.store.save_replay_cursor(self._replay_cursor)
        if self.publisher is not None:
            self.publisher.start()
        if self.webhooks is not None:
            self.webhooks.start(spawn, beat)
        _LOG.info("alert engine running with %d rules", len(self.engine.evaluators))

    def stop(self) -> None:
        try:
            self._flush(force=True)
        except ServiceUnavailable:
            _LOG.warning("stopping with %d unwritten alert changes", len(self._pending))
        except Exception:  # noqa: BLE001 - stopping must finish; the cause is logged
            _LOG.exception("alert changes could not be written on stop")
        if self.publisher is not None:
            self.publisher.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        self.store.close()

    # -- loading ------------------------------------------------------------------------

    def _load_rules(self, *, force: bool = False) -> None:
        revision = self.store.run(rules_store.rules_revision)
        if not force and revision == self._revision:
            return
        rules = self.store.run(rules_store.load_rules)
        old = {r.id: r for r in self.engine.rules}
        engine = Engine(rules, self.engine.directory)
        if self._engine_hook is not None:
            self._engine_hook(engine)
        changed = [r.id for r in engine.rules if old.get(r.id) != r] + [
            rid for rid in old if rid not in engine.evaluators
        ]
        for rule_id in changed:
            self.state.rules.pop(rule_id, None)
            for key in [k for k in self._pending_state if k[0] == rule_id]:
                del self._pending_state[key]
        if changed and not force:
            self.store.run(lambda c: rules_store.forget_state(c, changed))
        persisted = self.store.run(engine_progress.load_state) if force else []
        self._saved.update((rule_id, subject) for rule_id, subject, _ in persisted)
        active = self.store.run(engine_progress.active_alerts)
        engine.restore(
            self.state,
            persisted,
            [a for a in active if force or a[0] in changed],
        )
        self.engine = engine
        self._revision = revision
        if not force:
            _LOG.info("alert rules reloaded (%d enabled; changed: %s)", len(rules), changed)

    def _load_directory(self, *, initial: bool = False) -> None:
        if initial:
            self.directory.refresh()
            self.state.presence.update(self.store.run(readings_store.last_seen))
            self.state.links_down.update(self.store.run(readings_store.links_down))
        else:
            self.directory.refresh_if_stale()  # the safety net, if nobody else did
        self._sync_directory()

    def _sync_directory(self) -> None:
        """The engine's view of the directory (retired devices left out), rebuilt when
        the directory changed: a new map, so that caches keyed on it start over."""
        if self.directory.version == self._directory_version:
            return
        self._directory_version = self.directory.version
        view = {d: i for d, i in self.directory.devices().items() if i.state != "decommissioned"}
        self.engine.directory = view
        self.store.in_maintenance = {d for d, i in view.items() if i.state == "maintenance"}

    def _reload_maintenance(self, now: float) -> None:
        def work(conn: Any) -> tuple[list[maintenance_windows.MaintenanceWindow], bool]:
            windows = maintenance_windows.load_maintenance(conn, now)
            return windows, webhooks_store.any_enabled(conn)

        self.store.maintenance, self.store.has_webhooks = self.store.run(work)

    def _rebuild_windows(self, now: float) -> None:
        """Rate windows are not persisted: read them back from stored readings."""
        for evaluator in self.engine.evaluators.values():
            if not isinstance(evaluator, RateEvaluator):
                continue
            rule = evaluator.rule
            devices = [d for d, i in self.engine.directory.items() if evaluator.applies(i)]
            rows = self.store.run(
                lambda c, d=devices, m=rule.metric, w=rule.window: readings_store.recent_readings(
                    c, d, m, now - w
                )
            )
            rs = self.state.rule(rule.id, evaluator.new_state)
            for device_id, ts, value in rows:
                evaluator.add_history(rs, device_id, ts, value)

    def _replay(self) -> None:
        """Evaluate device events received after the last watermark (a crash window)."""
        watermark = self.store.watermark()
        if watermark is None:  # first start of this worker: nothing to catch up on
            self._watermark = self.clock()
            self._save_watermark()
            return
        since = max(watermark, self.clock() - REPLAY_MAX_AGE)
        rows = self.store.run(lambda c: readings_store.recent_events(c, since, REPLAY_LIMIT))
        directory = self.engine.directory
        items: list[tuple[str, list[Any], DeviceEvent | None]] = []
        for device_id, name, ts, data, received in rows:
            info = directory.get(device_id)
            if info is None or not self._owned(info):
                continue
            items.append((device_id, [], DeviceEvent(device_id, name, ts, data, None, received)))
        if items:
            _LOG.info("re-evaluating %d device events received since %s", len(items), since)
            obs = observations(items, directory)
            self._evaluate(obs, self.clock().timestamp())
            for failure in obs.failures:  # dead-lettered when they first came in
                self.errors += 1
                _LOG.error(
                    "re-evaluating a device event: rule %s raised %r",
                    failure.rule_id,
                    failure.error,
                )
            self._flush()
        newest = max((row[4] for row in rows), default=watermark)
        self._watermark_saved = watermark
        self._watermark = max(newest, watermark)
        self._save_watermark()

    def _owned(self, info: DeviceInfo) -> bool:
        topic = device_topic(info.community_id, info.device_class, info.device_id, "event")
        return bool(topic_matches_sub(self.topic_filter, topic))

    # -- the pipeline's calls -----------------------------------------------------------

    def committed(self, accepted: Sequence[Committed]) -> list[MessageFailure]:
        """After each commit, on the pipeline's listener thread. Never raises.

        Returns the messages a rule raised on (the rest of the batch was evaluated):
        the pipeline makes each an ``internal_error`` dead letter."""
        failed: list[EvaluationFailure] = []
        try:
            now = self.clock()
            self._sync_directory()
            obs = self._observe(accepted)
            if obs.unknown:
                # Devices registered since the directory heard of it (rate limited). If
                # the database cannot say, evaluate what is known now, not lose the batch.
                with contextlib.suppress(ServiceUnavailable):
                    self.directory.missing(obs.unknown)
                if self.directory.version != self._directory_version:
                    self._sync_directory()
                    obs = self._observe(accepted)
            obs.links = link_statuses(accepted)
            self._evaluate(obs, now.timestamp())
            failed = obs.failures
            newest = max((a.received_at for a in accepted if a.received_at), default=None)
            if newest is not None and (self._watermark is None or newest > self._watermark):
                self._watermark = newest
            self._flush()
            self._recovered()
        except ServiceUnavailable as exc:
            self._outage(exc)
        except Exception:  # noqa: BLE001 - the boundary: the engine must never stop ingest
            self.errors += 1
            _LOG.exception("alert engine failed on a batch")
        return self._failures(accepted, failed)

    def _observe(self, accepted: Sequence[Committed]) -> Observations:
        """The batch arranged for the engine; a message that makes arranging raise is
        left out (its failure recorded) and the others are arranged without it."""
        items = [(a.device_id, a.readings, a.event) for a in accepted]
        directory, metrics = self.engine.directory, self.engine.metrics
        try:
            return observations(items, directory, metrics)
        except Exception:  # noqa: BLE001 - found message by message below
            failures = []
            for i, item in enumerate(items):
                try:
                    observations([item], directory, metrics)
                except Exception as exc:  # noqa: BLE001 - this message's failure
                    failures.append(EvaluationFailure(i, "", exc))
                    items[i] = (item[0], [], None)  # keeps the indices of the others
            obs = observations(items, directory, metrics)
            obs.failures.extend(failures)
            return obs

    def _failures(
        self, accepted: Sequence[Committed], failed: Sequence[EvaluationFailure]
    ) -> list[MessageFailure]:
        """One failure per message, naming every rule that raised on it."""
        if not failed:
            return []
        by_message: dict[int, list[EvaluationFailure]] = {}
        for failure in failed:
            by_message.setdefault(failure.source, []).append(failure)
        found = []
        for source, failures in by_message.items():
            self.errors += 1
            rules = ", ".join(f.rule_id for f in failures if f.rule_id) or "arranging the batch"
            if not 0 <= source < len(accepted):
                _LOG.error("alert engine: %s raised %r on no known message", rules, failures[0])
                continue
            a = accepted[source]
            found.append(
                MessageFailure(
                    topic=a.topic,
                    payload=a.payload,
                    received_at=a.received_at or self.clock(),
                    stage=f"rule evaluation ({rules})",
                    error=failures[0].error,
                )
            )
        return found

    def tick(self, now: datetime) -> list[MessageFailure]:
        """Timers, reloads, escalation, retries and replayed dead letters. Never raises.

        Returns the replayed messages a rule raised on, as ``committed`` does."""
        if time.monotonic() < self._retry_at:
            return []  # the database was down a moment ago: do not hammer it
        failures: list[MessageFailure] = []
        try:
            self._tick(now, failures)
            self._recovered()
        except ServiceUnavailable as exc:
            self._outage(exc)
        except Exception:  # noqa: BLE001 - the boundary, as in committed()
            self.errors += 1
            _LOG.exception("alert engine tick failed")
        return failures

    def _evaluate_replays(self) -> list[MessageFailure]:
        """Dead letters replayed into storage since the last look (``dead-letters replay``,
        another process) go through evaluation as any committed message does."""
        cursor = self._replay_cursor
        if cursor is None:
            return []
        rows = self.store.run(
            lambda c: dead_letters_store.replayed_since(c, cursor, REPLAYED_BATCH)
        )
        if not rows:
            return []
        items = [
            item
            for _, topic, payload, received_at in rows
            if (item := self._replayed(topic, payload, received_at)) is not None
        ]
        failures = self.committed(items) if items else []
        self._replay_cursor = rows[-1][0]
        self.store.save_replay_cursor(self._replay_cursor)
        if items:
            _LOG.info("evaluated %d replayed dead letter(s)", len(items))
        return failures

    def _replayed(self, topic: str, payload: bytes, received_at: datetime) -> _Replayed | None:
        """Decoded again as the replay decoded it; None if another worker's, or no longer
        valid (it was stored, so only a change of limits since can do that)."""
        if not topic_matches_sub(self.topic_filter, topic):
            return None
        try:
            parsed = parse_topic(topic)
            decoded = decode(parsed, payload, received_at, self.limits)
        except RejectedMessage as exc:
            _LOG.warning("replayed message on %r not evaluated: %s", topic[:200], exc)
            return None
        # A status is old news by the time it is replayed: links are not judged on it.
        return _Replayed(
            parsed.device_id, topic, payload, decoded.readings, decoded.event, None, received_at
        )

    def _outage(self, exc: ServiceUnavailable) -> None:
        mono = time.monotonic()
        if self._outage_since is None:
            self._outage_since = mono
            _LOG.warning(
                "alert engine: database unavailable (%s); %d changes held, retrying",
                exc.detail,
                len(self._pending),
            )
        else:
            self._backoff = min(self._backoff * 2, OUTAGE_BACKOFF_MAX_S)
        self._retry_at = mono + self._backoff

    def _recovered(self) -> None:
        if self._outage_since is not None:
            _LOG.info(
                "alert engine: database back after %.1fs", time.monotonic() - self._outage_since
            )
            self._outage_since = None
            self._backoff = OUTAGE_BACKOFF_MIN_S
            self._retry_at = 0.0

    def _tick(self, now_dt: datetime, failures: list[MessageFailure]) -> None:
        now = now_dt.timestamp()
        mono = time.monotonic()
        if self._due.get("reload", 0.0) <= mono:
            self._due["reload"] = mono + self.settings.reload_s
            self._load_rules()
            self._reload_maintenance(now)
            failures += self._evaluate_replays()
        self._load_directory()
        if self._pending:
            self._flush()  # retry what an outage held back, first
        if self._due.get("tick", 0.0) > mono:
            return
        self._due["tick"] = mono + self.settings.tick_s
        changes, self.state = self.engine.tick(
            self.state,
            now,
            absence=self._absence_allowed(mono),
            links=self.healthy() and not self._pending,
        )
        self._pending.extend(changes)
        self._flush()
        if self._due.get("visits", 0.0) <= mono:
            self._due["visits"] = mono + VISIT_CHECK_EVERY_S
            self._pending.extend(self.store.run(lambda c: self.visits.run(c, now_dt)))
            self._flush()
        notices = self.store.escalate(now)
        if self._due.get("flood", 0.0) <= mono:
            self._due["flood"] = mono + FLOOD_CHECK_EVERY_S
            notices += self.store.end_floods(now)
        self._publish(notices)
        if self._due.get("watermark", 0.0) <= mono:
            self._due["watermark"] = mono + WATERMARK_EVERY_S
            self._save_watermark()

    def _absence_allowed(self, mono: float) -> bool:
        if not self.healthy() or self._pending:
            self._healthy_since = None
            return False
        if self._healthy_since is None:
            self._healthy_since = mono
        return mono - self._healthy_since >= self.absence_grace_s

    # -- evaluation and writing --------------------------------------------------------

    def _evaluate(self, obs: Observations, now: float) -> None:
        changes, self.state = self.engine.evaluate(obs, self.state, now)
        self._pending.extend(changes)

    def _collect_state(self) -> None:
        for rule_id, rs in self.state.rules.items():
            if not rs.persistent or not (rs.dirty or rs.removed):
                continue
            upserts, removed = rs.take_changes()
            for subject, data in upserts.items():
                self._pending_state[rule_id, subject] = data
            for subject in removed:
                self._pending_state[rule_id, subject] = None

    def _flush(self, *, force: bool = False) -> None:
        mono = time.monotonic()
        if not self._pending and not force and mono < self._state_due:
            return  # the state waits for its turn: taken then, each entry serialised once
        self._collect_state()
        if not self._pending and not self._pending_state:
            return
        changes = self._pending
        # A delete of a row never written (an entry born and dropped in between) is moot.
        state = {k: v for k, v in self._pending_state.items() if v is not None or k in self._saved}
        notices = self.store.apply(changes, state, self.clock().timestamp())
        for key, value in state.items():
            if value is None:
                self._saved.discard(key)
            else:
                self._saved.add(key)
        self._state_due = mono + STATE_EVERY_S
        self._pending, self._pending_state = [], {}
        self.alerts_written += len(changes)
        self._publish(notices)

    def _outlets(self) -> tuple[MqttAlertPublisher | None, WebhookSender | None]:
        """Where notices go: the MQTT publisher and the webhook sender to wake."""
        return self.publisher, self.webhooks

    def _publish(self, notices: list[Notice]) -> None:
        if not notices:
            return
        publisher, webhooks = self._outlets()
        if publisher is not None:
            publisher.publish(notices)
        if webhooks is not None and any(n.notify for n in notices):
            webhooks.wake()

    def _save_watermark(self) -> None:
        if self._pending or self._watermark is None or self._watermark == self._watermark_saved:
            return
        self.store.save_watermark(self._watermark)
        self._watermark_saved = self._watermark
