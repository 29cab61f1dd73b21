"""Alert lifecycle in the database: raise, repeat, clear, escalate, flood groups.

Everything one batch of engine changes produces is written in one transaction
of its own (the readings are already committed): the alerts, their history,
the engine state that has to outlive a restart, the webhook outbox, and a
``pg_notify`` that the API's live stream relays. Uniqueness is the database's:
a raise is ``INSERT ... ON CONFLICT`` on the partial unique index of active
alerts, so concurrent workers, or a restart that lost its state, add an
occurrence to the one alert instead of making a second; and on the episode key
(rule, subject, first_seen), so a batch evaluated again after its alert was
resolved opens nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg

from alerts.model import AlertChange, ChangeKind, community_subject
from core.errors import ServiceUnavailable
from core.rules import SEVERITIES, AlertState, Severity, escalated
from core.settings import AlertSettings
from store import alerts as alerts_db
from store import engine_progress
from store.alerts import ENGINE_ACTOR, NOTIFY_CHANNEL, add_history, notify
from store.maintenance_windows import MaintenanceWindow
from store.pools import Conn, DatabasePool, PoolWatch, is_outage
from store.rules import save_state
from store.webhooks import queue_deliveries

__all__ = [
    "FLOOD_RULE",
    "NOTIFY_CHANNEL",
    "AlertStore",
    "Notice",
    "StateChanges",
    "coalesce",
]

_LOG = logging.getLogger(__name__)
FLOOD_RULE = "system.flood"
# Stands in for an infinite time in saved state: further than any timestamp.
_FAR = 1e300
# pg_notify payloads are capped at 8000 bytes; details beyond this stay in the table.
_NOTIFY_DETAILS_MAX = 2000

StateChanges = dict[tuple[str, str], dict[str, Any] | None]  # None: delete


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _clean(value: Any) -> Any:
    """JSON that PostgreSQL takes: jsonb refuses NUL characters (devices send them) and
    infinities (an engine timer's "never")."""
    if isinstance(value, float) and not math.isfinite(value):
        return math.copysign(_FAR, value) if not math.isnan(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def coalesce(changes: Sequence[AlertChange]) -> list[AlertChange]:
    """Fold repeated raises of one (rule, subject) into the first, as an occurrence
    count, when no clear of it comes between: a storm of repeats costs one UPDATE
    per alert per transaction instead of one per reading. A higher severity or a
    chattering mark is kept as a change of its own."""
    out: list[AlertChange] = []
    open_at: dict[tuple[str, str], int] = {}
    for change in changes:
        key = (change.rule_id, change.subject)
        if change.kind is not ChangeKind.RAISE:
            open_at.pop(key, None)
            out.append(change)
            continue
        index = open_at.get(key)
        if index is not None:
            first = out[index]
            if change.severity == first.severity and bool(change.details.get("chattering")) <= bool(
                first.details.get("chattering")
            ):
                out[index] = replace(first, occurrences=first.occurrences + change.occurrences)
                continue
        open_at[key] = len(out)
        out.append(change)
    return out


def _rank(severity: str) -> int:
    return SEVERITIES.index(Severity(severity))


@dataclass(slots=True)
class Notice:
    """One transition to tell the world about (stream always; MQTT/webhooks if notify)."""

    action: str
    alert: dict[str, Any]
    notify: bool

    def payload(self) -> dict[str, Any]:
        return {"action": self.action, **self.alert}


@dataclass(slots=True)
class _Batch:
    now: float
    notices: list[Notice] = field(default_factory=list)
    new_by_community: dict[str, list[int]] = field(default_factory=dict)


ACTOR = ENGINE_ACTOR


class AlertStore:
    """Writes the engine's changes over a connection pool of its own (``store.pools``)."""

    def __init__(
        self,
        *,
        url: str,
        worker: str,
        flood_threshold: int = 10,
        flood_window_s: float = 600,
        watch: PoolWatch | None = None,
    ) -> None:
        self.worker = worker
        self.flood_threshold = flood_threshold
        self.flood_window_s = flood_window_s
        self.maintenance: list[MaintenanceWindow] = []
        self.in_maintenance: set[str] = set()  # devices whose registry state says so
        self.has_webhooks = True
        self.refused = 0
        # One listener thread writes: one connection (store.pools.DatabasePool).
        self._pool = DatabasePool(url, name="alerts", watch=watch)

    @classmethod
    def from_settings(
        cls, url: str, worker: str, settings: AlertSettings, watch: PoolWatch | None = None
    ) -> AlertStore:
        return cls(
            url=url,
            worker=worker,
            flood_threshold=settings.flood_threshold,
            flood_window_s=settings.flood_window_s,
            watch=watch,
        )

    # -- connection ---------------------------------------------------------------

    def open(self) -> None:
        """Start connecting (a service's start); the first use does it otherwise."""
        self._pool.open()

    def close(self) -> None:
        self._pool.close()

    def run(self, work: Any) -> Any:
        """``work(conn)`` in a transaction; an outage becomes ``ServiceUnavailable``."""
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    return work(conn)
            except psycopg.Error as exc:
                if is_outage(exc):  # a broken connection goes back to the pool, replaced
                    raise ServiceUnavailable("database", str(exc).strip()) from exc
                raise

    # -- the alert transaction ---------------------------------------------------------

    def apply(
        self, changes: Sequence[AlertChange], state: StateChanges, now: float
    ) -> list[Notice]:
        """Write changes and engine state in one transaction; return what to announce.

        A change the database refuses for its content (not for being unreachable)
        must not hold up the others, or every later batch behind it: the batch is
        then written change by change under savepoints and the refused one is
        logged and counted in ``refused``.
        """

        changes = coalesce(changes)

        def work(conn: Conn, isolate: bool) -> list[Notice]:
            batch = _Batch(now)
            for change in changes:
                if not isolate:
                    self._apply_one(conn, change, batch)
                    continue
                try:
                    with conn.transaction():  # a savepoint
                        self._apply_one(conn, change, batch)
                except psycopg.Error as exc:
                    if is_outage(exc):
                        raise
                    self.refused += 1
                    _LOG.error(
                        "alert change %s/%s refused: %s", change.rule_id, change.subject, exc
                    )
            self._flood(conn, batch)
            self._save_state(conn, state)
            self._announce(conn, batch.notices)
            return batch.notices

        try:
            result: list[Notice] = self.run(lambda conn: work(conn, False))
        except psycopg.Error as exc:
            _LOG.warning("alert batch refused (%s); writing change by change", exc)
            result = self.run(lambda conn: work(conn, True))
        return result

    def _apply_one(self, conn: Conn, change: AlertChange, batch: _Batch) -> None:
        if change.kind is ChangeKind.RAISE:
            self._raise(conn, change, batch)
        else:
            self._clear(conn, change, batch)

    def _suppressed_by(self, change: AlertChange) -> str | None:
        if change.device_id is not None and change.device_id in self.in_maintenance:
            return "device in maintenance"
        for window in self.maintenance:
            if window.starts_at <= change.at < window.ends_at and window.covers(
                change.community_id, change.device_id, change.building
            ):
                return f"maintenance window {window.id}: {window.reason}"
        return None

    def _history(
        self,
        conn: Conn,
        alert: Mapping[str, Any],
        action: str,
        from_state: str | None,
        note: str = "",
        details: Mapping[str, Any] | None = None,
        actor: str = ACTOR,
    ) -> int:
        return add_history(
            conn,
            alert["id"],
            action=action,
            actor=actor,
            from_state=from_state,
            to_state=alert["state"],
            severity=alert["severity"],
            note=note,
            details=_clean(dict(details or {})),
        )

    def _notice(
        self, batch: _Batch, alert: dict[str, Any], action: str, notify: bool, history_id: int
    ) -> None:
        alert = {**alert, "history_id": history_id}
        batch.notices.append(Notice(action, alert, notify))

    def _raise(self, conn: Conn, change: AlertChange, batch: _Batch) -> None:
        rule = change.rule
        suppressed = self._suppressed_by(change)
        existing = alerts_db.lock_active(conn, change.rule_id, change.subject)
        if existing is None:
            escalation = rule.escalation
            alert = alerts_db.open_alert(
                conn,
                {
                    "rule_id": change.rule_id,
                    "subject": change.subject,
                    "community_id": change.community_id,
                    "device_id": change.device_id,
                    "building": change.building,
                    "rule_type": rule.type,
                    "severity": change.severity.value,
                    "state": (AlertState.SUPPRESSED if suppressed else AlertState.OPEN).value,
                    "title": change.title,
                    "details": _clean(dict(change.details)),
                    "at": _ts(change.at),
                    "now": _ts(batch.now),
                    "auto_resolve": rule.auto_resolve,
                    "escalate_after": escalation.after if escalation else None,
                    "escalation_max": escalation.max_steps if escalation else 0,
                    "notified": suppressed is None,
                    "occurrences": change.occurrences,
                },
            )
            if alert is not None:
                action = "suppressed" if suppressed else "raised"
                hid = self._history(conn, alert, action, None, suppressed or "", change.details)
                self._notice(batch, alert, action, suppressed is None, hid)
                if suppressed is None and change.severity is not Severity.CRITICAL:
                    batch.new_by_community.setdefault(change.community_id, []).append(alert["id"])
                return
            # Another worker inserted it first (it waited for that commit): a repeat.
            existing = alerts_db.lock_active(conn, change.rule_id, change.subject)
            if existing is None:
                # Resolved since, or this very episode was opened and resolved before
                # (a redelivered batch; migration 0013's key): nothing to open again.
                return
        self._repeat(conn, existing[0], change, suppressed, batch)

    def _repeat(
        self,
        conn: Conn,
        alert: dict[str, Any],
        change: AlertChange,
        suppressed: str | None,
        batch: _Batch,
    ) -> None:
        """The condition again while the alert is active: count it; raise severity if higher."""
        higher = _rank(change.severity) > _rank(alert["severity"])
        unsuppress = alert["state"] == AlertState.SUPPRESSED and suppressed is None
        # An acknowledged pre-alarm that becomes a confirmed fire must be acknowledged
        # again: it re-opens, and its escalation clock starts over.
        reopen = unsuppress or (higher and alert["state"] == AlertState.ACKNOWLEDGED)
        updated = alerts_db.repeat(
            conn,
            {
                "at": _ts(change.at),
                "higher": higher,
                "occurrences": change.occurrences,
                "chattering": bool(change.details.get("chattering")),
                "severity": change.severity.value,
                "title": change.title,
                "details": _clean(dict(change.details)),
                "unsuppress": unsuppress,
                "reopen": reopen,
                "now": _ts(batch.now),
                "id": alert["id"],
            },
        )
        if higher:
            hid = self._history(
                conn,
                updated,
                "severity_raised",
                alert["state"],
                f"{alert['severity']} -> {change.severity.value}: {change.title}",
                change.details,
            )
            self._notice(batch, updated, "severity_raised", updated["state"] != "suppressed", hid)
        elif unsuppress:
            hid = self._history(conn, updated, "unsuppressed", alert["state"], "maintenance over")
            self._notice(batch, updated, "raised", True, hid)
        else:
            self._notice(batch, updated, "repeated", False, 0)

    def _clear(self, conn: Conn, change: AlertChange, batch: _Batch) -> None:
        found = alerts_db.lock_active(conn, change.rule_id, change.subject)
        if found is None:
            return  # already resolved by an operator
        alert, auto_resolve = found
        before = alert["state"]
        updated = alerts_db.clear(
            conn, alert["id"], _ts(change.at), resolve=auto_resolve, actor=ACTOR
        )
        action = "auto_resolved" if auto_resolve else "condition_cleared"
        hid = self._history(conn, updated, action, before, "condition cleared", change.details)
        self._notice(batch, updated, action, auto_resolve and before != "suppressed", hid)

    # -- flood control ------------------------------------------------------------------

    def _flood(self, conn: Conn, batch: _Batch) -> None:
        """More than N new alerts of one community in M minutes: one grouped alert."""
        for community, new_ids in batch.new_by_community.items():
            since = _ts(batch.now - self.flood_window_s)
            count = alerts_db.raised_since(conn, community, since, FLOOD_RULE)
            if count < self.flood_threshold:
                continue
            group = self._flood_alert(conn, community, count, batch)
            # The count is the rate (resolved ones were raised too); only alerts still
            # open or acknowledged join the group: a resolved one needs no attention.
            grouped = alerts_db.group_under(conn, group, community, since, FLOOD_RULE)
            # Members raised in this batch are not announced on their own: the group is.
            for notice in batch.notices:
                if notice.alert["id"] in grouped and notice.alert["id"] in new_ids:
                    notice.notify = False
                    notice.alert["group_id"] = group
            if grouped:
                alerts_db.not_notified(conn, [i for i in new_ids if i in grouped])

    def _flood_alert(self, conn: Conn, community: str, count: int, batch: _Batch) -> int:
        subject = community_subject(community)
        title = f"Alert flood: {count} alerts in {self.flood_window_s / 60:g} min"
        details = {"count": count, "window_s": self.flood_window_s}
        found = alerts_db.lock_active(conn, FLOOD_RULE, subject)
        if found is not None:
            alerts_db.update_flood(conn, found[0]["id"], count, title, details, _ts(batch.now))
            return int(found[0]["id"])
        alert = alerts_db.open_flood(
            conn, FLOOD_RULE, subject, community, title, details, count, _ts(batch.now)
        )
        hid = self._history(conn, alert, "raised", None, "flood control (ISA-18.2)", details)
        self._notice(batch, alert, "raised", True, hid)
        return int(alert["id"])

    def end_floods(self, now: float) -> list[Notice]:
        """A flood ends when its community falls under half the threshold in the window."""

        def work(conn: Conn) -> list[Notice]:
            batch = _Batch(now)
            since = _ts(now - self.flood_window_s)
            for alert in alerts_db.active_of_rule(conn, FLOOD_RULE):
                count = alerts_db.raised_since(conn, alert["community_id"], since, FLOOD_RULE)
                if count * 2 >= self.flood_threshold:
                    continue
                updated = alerts_db.resolve_by(conn, alert["id"], _ts(now), ACTOR, "flood over")
                hid = self._history(conn, updated, "auto_resolved", alert["state"], "flood over")
                self._notice(batch, updated, "auto_resolved", True, hid)
            self._announce(conn, batch.notices)
            return batch.notices

        result: list[Notice] = self.run(work)
        return result

    # -- escalation ---------------------------------------------------------------------

    def escalate(self, now: float) -> list[Notice]:
        """Open alerts not acknowledged within their rule's window: one level up, again."""

        def work(conn: Conn) -> list[Notice]:
            batch = _Batch(now)
            for alert in alerts_db.due_for_escalation(conn, _ts(now)):
                severity = escalated(alert["severity"]).value
                updated = alerts_db.escalate(conn, alert["id"], severity, _ts(now))
                note = (
                    f"not acknowledged: {alert['severity']} -> {severity}"
                    f" (step {updated['escalation_level']})"
                )
                hid = self._history(conn, updated, "escalated", alert["state"], note)
                self._notice(batch, updated, "escalated", True, hid)
            self._announce(conn, batch.notices)
            return batch.notices

        result: list[Notice] = self.run(work)
        return result

    # -- state, outbox, notify ----------------------------------------------------------

    def _save_state(self, conn: Conn, state: StateChanges) -> None:
        if not state:
            return
        upserts = [(r, s, _clean(d)) for (r, s), d in state.items() if d is not None]
        deletes = [(r, s) for (r, s), d in state.items() if d is None]
        save_state(conn, upserts, deletes)

    def _announce(self, conn: Conn, notices: Iterable[Notice]) -> None:
        payloads = []
        for notice in notices:
            payload = notice.payload()
            text = json.dumps(payload, default=str)
            if len(text) > 7000 or len(json.dumps(payload.get("details"))) > _NOTIFY_DETAILS_MAX:
                text = json.dumps({**payload, "details": {}}, default=str)
            payloads.append(text)
            if notice.notify and self.has_webhooks:
                queue_deliveries(
                    conn,
                    notice.alert["id"],
                    json.loads(text),
                    notice.alert["community_id"],
                    notice.alert["severity"],
                )
        notify(conn, payloads)

    def save_watermark(self, watermark: datetime) -> None:
        self.run(lambda conn: engine_progress.save_watermark(conn, self.worker, watermark))

    def save_replay_cursor(self, cursor: int) -> None:
        """The last replayed dead letter the engine has evaluated (``alerts.listener``)."""
        self.run(lambda conn: engine_progress.save_replay_cursor(conn, self.worker, cursor))

    def replay_cursor(self) -> int | None:
        found = self.run(lambda conn: engine_progress.progress_of(conn, self.worker))
        return None if found is None else found[1]

    def watermark(self) -> datetime | None:
        found = self.run(lambda conn: engine_progress.progress_of(conn, self.worker))
        return None if found is None else found[0]
