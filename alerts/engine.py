"""The rule engine's pure heart: ``evaluate(batch, state, now) -> (changes, state)``.

No I/O and no clock of its own: the caller passes the batch, the state and the
time, and gets back the alert changes and the state. Persistence, notification
and the wall clock sit at the edges (``alerts.listener``). The state is updated
in place and returned: copying every rule's windows per batch would cost more
than evaluating it; a caller that wants the old state keeps a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

from alerts.absence import AbsenceEvaluator
from alerts.clock_skew import ClockSkewEvaluator
from alerts.correlation import CorrelationEvaluator
from alerts.evaluator import Context, Evaluator
from alerts.events import CountEvaluator, EventEvaluator
from alerts.model import (
    AlertChange,
    Directory,
    EvaluationFailure,
    Observations,
    ReadingColumns,
)
from alerts.rate import RateEvaluator
from alerts.state import EngineState, RuleState
from alerts.threshold import ThresholdEvaluator
from core.rules import (
    AbsenceRule,
    ClockSkewRule,
    CorrelationRule,
    CountRule,
    EventRule,
    RateRule,
    Rule,
    ThresholdRule,
)

__all__ = ["Engine", "build_evaluator"]

_V = TypeVar("_V")


# Each rule type's evaluator; the first whose type the rule is an instance of builds it.
_EVALUATORS: tuple[tuple[type[Rule], Callable[[Any], Evaluator]], ...] = (
    (ThresholdRule, ThresholdEvaluator),
    (RateRule, RateEvaluator),
    (AbsenceRule, AbsenceEvaluator),
    (ClockSkewRule, ClockSkewEvaluator),
    (CountRule, CountEvaluator),
    (EventRule, EventEvaluator),
    (CorrelationRule, CorrelationEvaluator),
)


def build_evaluator(rule: Rule) -> Evaluator:
    for rule_type, evaluator in _EVALUATORS:
        if isinstance(rule, rule_type):
            return evaluator(rule)
    raise TypeError(f"no evaluator for {type(rule).__name__}")


class Engine:
    """The enabled rules, indexed by the metrics and events they read."""

    def __init__(self, rules: Iterable[Rule], directory: Directory | None = None) -> None:
        self.directory: Directory = directory if directory is not None else {}
        self.evaluators: dict[str, Evaluator] = {
            rule.id: build_evaluator(rule) for rule in rules if rule.enabled
        }
        self._by_metric: dict[str, list[Evaluator]] = {}
        self._by_event: dict[str, list[Evaluator]] = {}
        self._watchers: dict[str, list[EventEvaluator]] = {}
        self._absence: list[AbsenceEvaluator] = []
        self._clocks: list[ClockSkewEvaluator] = []
        for evaluator in self.evaluators.values():
            for metric in evaluator.metrics():
                self._by_metric.setdefault(metric, []).append(evaluator)
            for event in dict.fromkeys(evaluator.events()):
                self._by_event.setdefault(event, []).append(evaluator)
            if isinstance(evaluator, EventEvaluator):
                for metric in evaluator.watched():
                    self._watchers.setdefault(metric, []).append(evaluator)
            if isinstance(evaluator, AbsenceEvaluator):
                self._absence.append(evaluator)
            if isinstance(evaluator, ClockSkewEvaluator):
                self._clocks.append(evaluator)
        # Readings of other metrics are not even arranged (observations(metrics=...)).
        self.metrics: frozenset[str] = frozenset(self._by_metric) | frozenset(self._watchers)

    @property
    def rules(self) -> list[Rule]:
        return [e.rule for e in self.evaluators.values()]

    def _rs(self, state: EngineState, evaluator: Evaluator) -> RuleState[Any]:
        return state.rule(evaluator.rule.id, evaluator.new_state)

    def evaluate(
        self, batch: Observations, state: EngineState, now: float
    ) -> tuple[list[AlertChange], EngineState]:
        """Evaluate one batch. A rule that raises on a message is that message's
        failure (``batch.failures``), not the batch's: every other rule, and this
        rule for every other message, is still evaluated."""
        ctx = Context(self.directory, now, state)
        if batch.links:
            self._links(state, ctx, batch, batch.links)
        if batch.seen:
            state.presence.update(batch.seen)
            down = state.links_down
            for device_id, ts in batch.seen.items() if down else ():
                if ts > down.get(device_id, ts):
                    del down[device_id]  # data sent after the Will: the link is back
            for absence in self._absence:
                rs = self._rs(state, absence)
                self._per_device(batch, absence, batch.seen, partial(absence.seen, rs, ctx=ctx))
        if batch.ahead:
            for clock in self._clocks:
                rs = self._rs(state, clock)
                self._per_device(batch, clock, batch.ahead, partial(clock.on_ahead, rs, ctx=ctx))
        for event in batch.events:
            for evaluator in self._by_event.get(event.event, ()):
                try:
                    if evaluator.applies(event.device):
                        evaluator.on_event(event, self._rs(state, evaluator), ctx)
                except Exception as exc:  # noqa: BLE001 - this message's failure, not the batch's
                    batch.failures.append(EvaluationFailure(event.source, evaluator.rule.id, exc))
        for (device_class, metric), group in batch.readings.items():
            for evaluator in self._by_metric.get(metric, ()):
                if evaluator.device_class in (None, device_class):
                    rs = self._rs(state, evaluator)
                    call = partial(evaluator.on_readings, metric, rs=rs, ctx=ctx)
                    self._per_message(batch, evaluator, group, call)
            watchers = self._watchers.get(metric)
            if watchers:
                for watcher in watchers:
                    watch = partial(self._watch, state, ctx, watcher=watcher)
                    self._per_message(batch, watcher, group, watch)
                last = state.last_values
                for device_id, value in zip(group.device_ids, group.values, strict=True):
                    last[device_id, metric] = value
        return ctx.changes, state

    @staticmethod
    def _per_message(
        batch: Observations,
        evaluator: Evaluator,
        group: ReadingColumns,
        call: Callable[[ReadingColumns], None],
    ) -> None:
        """``call`` on the whole group; if it raises, on each message's rows alone, so
        that only the messages it raises on fail. The rows the failed call got through
        are seen a second time by this one rule: at worst a raise is repeated (one more
        occurrence of an open alert), never lost."""
        try:
            call(group)
        except Exception as exc:  # noqa: BLE001 - isolated below, message by message
            parts = group.by_source()
            if len(parts) == 1:
                batch.failures.append(EvaluationFailure(parts[0][0], evaluator.rule.id, exc))
                return
        else:
            return
        for source, part in parts:
            try:
                call(part)
            except Exception as exc:  # noqa: BLE001 - this message's failure, not the batch's
                batch.failures.append(EvaluationFailure(source, evaluator.rule.id, exc))

    @staticmethod
    def _per_device(
        batch: Observations,
        evaluator: Evaluator,
        items: dict[str, _V],
        call: Callable[[dict[str, _V]], None],
    ) -> None:
        """As ``_per_message`` for inputs kept per device (signs of life, clock offsets):
        a failure is laid at the door of the device's last message in the batch."""
        try:
            call(items)
        except Exception as exc:  # noqa: BLE001 - isolated below, device by device
            if len(items) == 1:
                device_id = next(iter(items))
                batch.failures.append(
                    EvaluationFailure(batch.sources.get(device_id, -1), evaluator.rule.id, exc)
                )
                return
        else:
            return
        for device_id, value in items.items():
            try:
                call({device_id: value})
            except Exception as exc:  # noqa: BLE001 - this device's failure, not the batch's
                batch.failures.append(
                    EvaluationFailure(batch.sources.get(device_id, -1), evaluator.rule.id, exc)
                )

    def _links(
        self,
        state: EngineState,
        ctx: Context,
        batch: Observations,
        links: dict[str, tuple[bool, float]],
    ) -> None:
        """Status messages (a Last Will is one): down now, or back."""
        down = state.links_down
        back: dict[str, float] = {}
        for device_id, (online, at) in links.items():
            if not online:
                down[device_id] = at
            elif down.pop(device_id, None) is not None:
                back[device_id] = at
        # A reconnect after a Will we saw is a sign of life, or silence since before
        # the link was cut would raise the moment the link alert resolves. Other
        # online statuses are not: a retained one is re-sent on every resubscribe.
        state.presence.update(back)
        for absence in self._absence:
            rs = self._rs(state, absence)
            self._per_device(batch, absence, links, partial(absence.links, rs, ctx=ctx))

    def _watch(
        self, state: EngineState, ctx: Context, group: ReadingColumns, watcher: EventEvaluator
    ) -> None:
        """Follow-ups waiting on a metric (a fall's "no steps since")."""
        rs = self._rs(state, watcher)
        if not rs.entries:
            return
        pending = {e.device_id for e in rs.entries.values() if e.deadline is not None}
        ts, values = group.ts, group.values
        for i, device_id in enumerate(group.device_ids):
            if device_id in pending:
                watcher.on_watched(rs, ctx, device_id, ts[i], values[i])

    def tick(
        self, state: EngineState, now: float, *, absence: bool = True, links: bool | None = None
    ) -> tuple[list[AlertChange], EngineState]:
        """Let time pass with no new data: timers, windows, follow-ups, and absence unless
        the caller knows that silence means nothing now (intake stalled). Lost links
        (``links``, default as ``absence``) need no backlog drained: a Will is news."""
        ctx = Context(self.directory, now, state, silence_counts=absence)
        for evaluator in self.evaluators.values():
            if absence or not isinstance(evaluator, AbsenceEvaluator):
                evaluator.tick(self._rs(state, evaluator), ctx)
        if (absence if links is None else links) and state.links_down:
            for lost in self._absence:
                lost.links_lost(self._rs(state, lost), ctx)
        return ctx.changes, state

    # -- restart -----------------------------------------------------------------

    def restore(
        self,
        state: EngineState,
        persisted: Iterable[tuple[str, str, Mapping[str, Any]]],
        active: Iterable[tuple[str, str, float]],
    ) -> EngineState:
        """Load persisted entries, then mark what has an active alert as firing."""
        for rule_id, subject, data in persisted:
            evaluator = self.evaluators.get(rule_id)
            if evaluator is None or not evaluator.persistent:
                continue
            self._rs(state, evaluator).load(subject, evaluator.entry_from_json(data))
        for rule_id, subject, since in active:
            evaluator = self.evaluators.get(rule_id)
            if evaluator is not None:
                evaluator.mark_firing(self._rs(state, evaluator), subject, since)
        return state
