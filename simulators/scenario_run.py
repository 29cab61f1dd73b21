"""One scenario from start to verdict, or several side by side: what ``scenario run`` calls.

Each run plays in a community of its own (the scenario's name and a random
suffix), so runs never see each other's alerts, and an alert still open from
an earlier run cannot absorb this one's. The registry is written first (a
callback: the command line writes it through SQL, a test as it likes); the
gateway and the rule engine re-read the registry on an unknown device at
most every second or two, so play starts a moment later. While the timeline
plays the alerts are read every second; the run ends when every expected
alert has come or run out of time and the settle time after the last step is
over.

Scenarios with UITDs play them over TCP to a fire bridge: the one given
(``fire_bridge``, host and port of a running one), or else one that the
caller's ``start_bridge`` starts for the runs (the launcher's, since the
simulators do not import the bridge).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Unpack

import psycopg

from core.errors import ConfigurationError, ServiceUnavailable
from core.gbt26875 import Command
from simulators.checker import (
    AlertRecord,
    AlertSource,
    Outcome,
    Row,
    Verdict,
    judge,
    render,
    render_error,
)
from simulators.player import Player, PlayOptions
from simulators.responder import ResponderActor, ResponderBehaviour
from simulators.scenario import BoundScenario, Scenario, bind

__all__ = ["ScenarioResult", "community_id_for", "run_scenario", "run_scenarios"]

log = logging.getLogger(__name__)

# The gateway re-reads the registry on an unknown device at most every 1 s, the
# rule engine every 2 s: new devices speak after both can have seen them.
REGISTRY_SETTLE_S = 3.0
POLL_S = 1.0
FINAL_READ_ATTEMPTS = 5
# After every deadline has passed, give up this much later anyway.
GRACE_S = 15.0


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    bound: BoundScenario
    verdict: Verdict | None  # None when the run broke off; ``error`` says why
    table: str
    time_scale: float
    elapsed_s: float
    messages: int
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.verdict is not None and self.verdict.passed


def community_id_for(scenario: Scenario, prefix: str = "scn") -> str:
    return f"{prefix}-{scenario.name}-{secrets.token_hex(3)}"[:64]


def _horizon_s(bound: BoundScenario, time_scale: float) -> float:
    """Wall seconds after the start by which everything must have happened."""
    scenario = bound.scenario
    steps = {s.name: s.at / time_scale for s in scenario.timeline if s.name}
    last = max((s.at / time_scale for s in scenario.timeline), default=0.0)
    deadlines = [steps.get(e.after or "", 0.0) + e.within for e in scenario.expect]
    return max([last + scenario.settle, *deadlines]) + GRACE_S


def _read_final(alerts: AlertSource, bound: BoundScenario) -> list[AlertRecord]:
    """The alerts for the verdict: a slow API gets a few chances, not a crash."""
    for attempt in range(FINAL_READ_ATTEMPTS):
        try:
            return alerts.alerts(bound.community.id)
        except ServiceUnavailable as exc:
            if attempt == FINAL_READ_ATTEMPTS - 1:
                raise
            log.warning("%s: reading alerts: %s; again", bound.scenario.name, exc)
            time.sleep(POLL_S)
    raise AssertionError("unreachable")


def run_scenario(
    bound: BoundScenario,
    *,
    mqtt_url: str,
    alerts: AlertSource,
    register: Callable[[BoundScenario], None] | None = None,
    retire: Callable[[BoundScenario], None] | None = None,
    **play: Unpack[PlayOptions],
) -> ScenarioResult:
    """Register, play and judge ``bound``; ``play`` says how (``clock`` stamps the
    messages and the verdict).

    A run that breaks off (the broker, the API or the database failing it) is
    a failed result whose table says why, not an exception: the other runs
    beside it still report.
    """
    began = time.monotonic()
    player = Player(bound, mqtt_url=mqtt_url, **play)
    error: str | None = None
    verdict: Verdict | None = None
    try:
        verdict = _play(
            bound, player, alerts=alerts, register=register, retire=retire, mqtt_url=mqtt_url
        )
    except (ServiceUnavailable, ConfigurationError, psycopg.Error) as exc:
        log.warning("scenario %s broke off: %s", bound.scenario.name, exc)
        error = f"{type(exc).__name__}: {str(exc).strip()}"
        table = render_error(bound, error, time_scale=player.time_scale)
    else:
        table = render(bound, verdict, time_scale=player.time_scale)
    return ScenarioResult(
        bound=bound,
        verdict=verdict,
        table=table,
        time_scale=player.time_scale,
        elapsed_s=time.monotonic() - began,
        messages=player.messages,
        error=error,
    )


def _play(
    bound: BoundScenario,
    player: Player,
    *,
    alerts: AlertSource,
    register: Callable[[BoundScenario], None] | None,
    retire: Callable[[BoundScenario], None] | None,
    mqtt_url: str,
) -> Verdict:
    """The verdict on ``bound`` once it has played (its UITD frames included)."""
    if register is not None:
        register(bound)
        time.sleep(REGISTRY_SETTLE_S)
    scenario = bound.scenario
    actors = _responders(bound, mqtt_url, player.time_scale)
    try:  # registered devices are retired whatever happens from here
        for actor in actors:
            actor.start()
        player.start()
        assert player.started_at is not None
        started = player.started_at
        start_mono = time.monotonic()
        give_up = start_mono + _horizon_s(bound, player.time_scale)
        settle_until = start_mono + player.timeline_end_s + scenario.settle
        verdict: Verdict | None = None
        while True:
            player.advance(time.monotonic() + POLL_S)
            now_mono = time.monotonic()
            try:
                records = alerts.alerts(bound.community.id)
            except ServiceUnavailable as exc:
                log.warning("%s: alerts not readable yet: %s", scenario.name, exc)
                records = None
            if records is not None:
                verdict = judge(
                    bound,
                    records,
                    player.steps,
                    now=player.clock(),
                    started=started,
                    ended=False,
                )
                waiting = any(
                    r.kind == "expect" and r.outcome is Outcome.PENDING for r in verdict.rows
                )
                if player.timeline_done() and now_mono >= settle_until and not waiting:
                    break
            if now_mono >= give_up:
                break
        records = _read_final(alerts, bound)
        verdict = judge(
            bound, records, player.steps, now=player.clock(), started=started, ended=True
        )
    finally:
        player.stop()
        for actor in actors:  # a responder on the way finishes the trip (the arrival)
            actor.wait_idle(_RESPONDER_WAIT_S)
            actor.stop()
        if retire is not None:
            retire(bound)
    return _with_frames(verdict, player.panel_answers)


def _with_frames(verdict: Verdict, answers: Sequence[tuple[str, str, int | None]]) -> Verdict:
    """A row per UITD incident: each of its frames confirmed by the bridge (after
    commit), or the run fails; a denied or unanswered frame is a lost alarm."""
    rows = list(verdict.rows)
    played: dict[tuple[str, str], list[int | None]] = {}
    for uitd, incident, answer in answers:
        played.setdefault((uitd, incident), []).append(answer)
    for (uitd, incident), got in played.items():
        bad = [a for a in got if a != Command.CONFIRM]
        actual = (
            f"{len(got)} confirmed"
            if not bad
            else ", ".join("denied" if a == Command.DENY else "no answer" for a in bad)
        )
        outcome = Outcome.FAILURE if bad else Outcome.SUCCESS
        rows.append(
            Row("frames", f"incident {incident}", f"uitd:{uitd}", "-", "-", actual, outcome)
        )
    return Verdict(rows=tuple(rows), done=verdict.done)


# The longest a run waits after its timeline for its responders' replies to go out.
_RESPONDER_WAIT_S = 120.0


def _responders(bound: BoundScenario, mqtt_url: str, time_scale: float) -> list[ResponderActor]:
    """The scenario's simulated responders, their delays on the run's time scale."""
    return [
        ResponderActor(
            bound.community.id,
            bound.responder_id(spec.id),
            mqtt_url,
            ResponderBehaviour(
                accept_after_s=spec.accept_after / time_scale,
                travel_s=spec.travel / time_scale,
                answers=spec.answers,
            ),
        )
        for spec in bound.scenario.responders
    ]


def run_scenarios(
    scenarios: Sequence[Scenario],
    *,
    mqtt_url: str,
    alerts: AlertSource,
    register: Callable[[BoundScenario], None] | None = None,
    retire: Callable[[BoundScenario], None] | None = None,
    prefix: str = "scn",
    on_result: Callable[[ScenarioResult], None] | None = None,
    start_bridge: Callable[[], AbstractContextManager[tuple[str, int]]] | None = None,
    **play: Unpack[PlayOptions],
) -> list[ScenarioResult]:
    """Run several scenarios side by side (each in a thread and a community of its own).

    Without ``fire_bridge``, scenarios with UITDs get one from ``start_bridge``
    (smartcommunity/panels.py: ``bridge_for_runs``) for as long as the runs last.
    """
    results: dict[int, ScenarioResult] = {}
    errors: dict[int, BaseException] = {}
    lock = threading.Lock()

    # Every scenario bound before any plays: a mistake in one file stops the lot at once.
    bounds = [bind(scenario, community_id_for(scenario, prefix)) for scenario in scenarios]

    def one(index: int, bound: BoundScenario) -> None:
        try:
            result = run_scenario(
                bound, mqtt_url=mqtt_url, alerts=alerts, register=register, retire=retire, **play
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            with lock:
                errors[index] = exc
            return
        with lock:
            results[index] = result
            if on_result is not None:
                on_result(result)

    threads = [
        threading.Thread(target=one, args=(i, b), name=f"scenario-{b.scenario.name}")
        for i, b in enumerate(bounds)
    ]
    with ExitStack() as stack:
        wants_bridge = play.get("fire_bridge") is None and any(b.uitds for b in bounds)
        if wants_bridge and start_bridge is not None:
            play["fire_bridge"] = stack.enter_context(start_bridge())
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        first = min(errors)
        raise errors[first]
    return [results[i] for i in range(len(scenarios))]
