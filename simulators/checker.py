"""Expected against actual alerts: read from the platform's API, judged, printed as a table.

The API is the contract: ``GET /api/v1/alerts?community_id=`` lists a
community's alerts and ``GET /api/v1/alerts/{id}`` has each one's history, whose
``raised`` and ``severity_raised`` entries say when it reached which severity.
An expectation passes when a matching alert reached the expected severity no
earlier than its step and within its time; a forbid fails on any matching
alert; any other alert fails the run unless the scenario allows its rule.
Escalation (no one acknowledged in time) is the platform's own doing and does
not count as the rule reaching a severity.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from core.errors import ServiceUnavailable
from simulators.player import StepRecord
from simulators.scenario import BoundScenario, Expectation

__all__ = [
    "AlertRecord",
    "AlertSource",
    "ApiAlerts",
    "Outcome",
    "Row",
    "Verdict",
    "judge",
    "render",
    "render_error",
]

# History actions that mean "the rule put the alert at this severity".
RAISE_ACTIONS = frozenset({"raised", "severity_raised", "suppressed"})
# Clocks of the player and the database agree to within this (one machine, or NTP).
CLOCK_SLACK = timedelta(seconds=1)
HTTP_TIMEOUT_S = 10.0
PAGE = 500


@dataclass(frozen=True, slots=True)
class Raise:
    at: datetime
    severity: str


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    rule_id: str
    subject: str
    severity: str
    state: str
    raised_at: datetime
    raises: tuple[Raise, ...]


class AlertSource(Protocol):
    def alerts(self, community_id: str) -> list[AlertRecord]: ...


class ApiAlerts:
    """Alerts of a community through the HTTP API with a bearer token."""

    def __init__(self, *, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        # An alert's history is read again only when its severity or state changed.
        self._raises: dict[int, tuple[tuple[str, str], tuple[Raise, ...]]] = {}
        self._lock = threading.Lock()

    def _history(self, alert: dict[str, Any]) -> tuple[Raise, ...]:
        key = (str(alert["severity"]), str(alert["state"]))
        ident = int(alert["id"])
        with self._lock:
            cached = self._raises.get(ident)
        if cached is not None and cached[0] == key:
            return cached[1]
        detail = self._get(f"/api/v1/alerts/{ident}")
        raises = tuple(
            Raise(at=datetime.fromisoformat(h["at"]), severity=h["severity"])
            for h in detail["history"]
            if h["action"] in RAISE_ACTIONS
        )
        with self._lock:
            self._raises[ident] = (key, raises)
        return raises

    def _get(self, path: str, query: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"API URL must be http(s), not {self.base_url!r}")
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url, headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServiceUnavailable("api", f"GET {path}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ServiceUnavailable("api", f"GET {path}: {exc}") from exc

    def alerts(self, community_id: str) -> list[AlertRecord]:
        records = []
        query = {"community_id": community_id, "limit": str(PAGE)}
        while True:
            page = self._get("/api/v1/alerts", query)
            for alert in page["data"]:
                records.append(
                    AlertRecord(
                        id=int(alert["id"]),
                        rule_id=alert["rule_id"],
                        subject=alert["subject"],
                        severity=alert["severity"],
                        state=alert["state"],
                        raised_at=datetime.fromisoformat(alert["raised_at"]),
                        raises=self._history(alert),
                    )
                )
            if not page.get("next_cursor"):
                return records
            query["after"] = page["next_cursor"]


class Outcome(StrEnum):
    SUCCESS = "PASS"
    FAILURE = "FAIL"
    PENDING = "..."


@dataclass(frozen=True, slots=True)
class Row:
    kind: str  # "expect", "forbid", "unexpected"
    rule: str
    subject: str
    severity: str
    within: str
    actual: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Verdict:
    rows: tuple[Row, ...]
    done: bool

    @property
    def passed(self) -> bool:
        return all(r.outcome is Outcome.SUCCESS for r in self.rows)


@dataclass(slots=True)
class _Context:
    bound: BoundScenario
    alerts: Sequence[AlertRecord]
    steps: dict[str | None, datetime]
    now: datetime
    ended: bool
    claimed: set[int] = field(default_factory=set)


def _candidates(ctx: _Context, expectation: Expectation) -> list[AlertRecord]:
    pattern = ctx.bound.subject(expectation.subject)
    return [
        a
        for a in ctx.alerts
        if fnmatch.fnmatchcase(a.rule_id, expectation.rule)
        and (pattern is None or fnmatch.fnmatchcase(a.subject, pattern))
    ]


def _reached(alert: AlertRecord, severity: str | None) -> datetime | None:
    times = [r.at for r in alert.raises if severity is None or r.severity == severity]
    return min(times, default=None)


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():+.1f}s"


def _expect(ctx: _Context, expectation: Expectation) -> Row:
    subject = expectation.subject or "*"
    severity = expectation.severity or "any"
    within = f"{expectation.within:g}s" + (f" of {expectation.after}" if expectation.after else "")
    start = ctx.steps.get(expectation.after)

    def row(actual: str, outcome: Outcome) -> Row:
        return Row("expect", expectation.rule, subject, severity, within, actual, outcome)

    if start is None:
        return row("step not run yet", Outcome.FAILURE if ctx.ended else Outcome.PENDING)
    deadline = start + timedelta(seconds=expectation.within)
    found: list[tuple[timedelta, AlertRecord]] = []
    for alert in _candidates(ctx, expectation):
        reached = _reached(alert, expectation.severity)
        if reached is not None:
            found.append((reached - start, alert))
            ctx.claimed.add(alert.id)
    in_time = [f for f in found if -CLOCK_SLACK <= f[0] <= timedelta(seconds=expectation.within)]
    if in_time:
        latency, alert = min(in_time, key=lambda f: f[0])
        return row(f"{_seconds(latency)} {expectation.severity or alert.severity}", Outcome.SUCCESS)
    if found:
        latency, alert = min(found, key=lambda f: abs(f[0]))
        late = latency > timedelta(seconds=expectation.within)
        return row(f"{_seconds(latency)} ({'late' if late else 'early'})", Outcome.FAILURE)
    if ctx.now <= deadline + CLOCK_SLACK and not ctx.ended:
        return row("waiting", Outcome.PENDING)
    return row("none", Outcome.FAILURE)


def _forbid(ctx: _Context, expectation: Expectation) -> Row:
    subject = expectation.subject or "*"
    severity = expectation.severity or "any"
    allowed = ctx.bound.scenario.allow
    hits = [
        a
        for a in _candidates(ctx, expectation)
        if _reached(a, expectation.severity)
        and not any(fnmatch.fnmatchcase(a.rule_id, pattern) for pattern in allowed)
    ]
    ctx.claimed.update(a.id for a in hits)
    if hits:
        first = hits[0]
        actual = f"raised: {first.subject} {first.severity}"
        return Row("forbid", expectation.rule, subject, severity, "-", actual, Outcome.FAILURE)
    outcome = Outcome.SUCCESS if ctx.ended else Outcome.PENDING
    return Row("forbid", expectation.rule, subject, severity, "-", "none", outcome)


def judge(
    bound: BoundScenario,
    alerts: Sequence[AlertRecord],
    steps: Sequence[StepRecord],
    *,
    now: datetime,
    started: datetime,
    ended: bool,
) -> Verdict:
    """Rows for every expectation, forbid and unexpected alert; ``done`` when nothing is pending."""
    by_name: dict[str | None, datetime] = {None: started}
    by_name.update({s.name: s.at for s in steps if s.name})
    ctx = _Context(bound=bound, alerts=alerts, steps=by_name, now=now, ended=ended)
    scenario = bound.scenario
    rows = [_expect(ctx, e) for e in scenario.expect]
    rows += [_forbid(ctx, f) for f in scenario.forbid]
    for alert in alerts:
        if alert.id in ctx.claimed:
            continue
        first = alert.raised_at - started
        if any(fnmatch.fnmatchcase(alert.rule_id, allowed) for allowed in scenario.allow):
            rows.append(
                Row(
                    "allowed",
                    alert.rule_id,
                    alert.subject,
                    alert.severity,
                    "-",
                    f"{_seconds(first)} {alert.state}",
                    Outcome.SUCCESS,
                )
            )
            continue
        rows.append(
            Row(
                "unexpected",
                alert.rule_id,
                alert.subject,
                alert.severity,
                "-",
                f"{_seconds(first)} {alert.state}",
                Outcome.FAILURE,
            )
        )
    done = all(r.outcome is not Outcome.PENDING for r in rows)
    return Verdict(rows=tuple(rows), done=done)


def _short(subject: str, community_id: str) -> str:
    return (
        subject.replace(f"device:{community_id}-", "device:")
        .replace(f"building:{community_id}/", "building:")
        .replace(f"community:{community_id}", "community")
    )


def _head(bound: BoundScenario, time_scale: float) -> str:
    return (
        f"scenario {bound.scenario.name}: {bound.scenario.title}\n"
        f"  community {bound.community.id}, {len(bound.cast)} devices playing"
        + (f" and {len(bound.uitds)} UITD(s)" if bound.uitds else "")
        + f", time scale {time_scale:g}"
    )


def render_error(bound: BoundScenario, error: str, *, time_scale: float) -> str:
    """What a run that broke off prints in place of its table."""
    return f"{_head(bound, time_scale)}\n  ERROR: {error}\n  FAIL: the run broke off"


def render(bound: BoundScenario, verdict: Verdict, *, time_scale: float) -> str:
    """The pass/fail table of one scenario."""
    community = bound.community.id
    head = _head(bound, time_scale)
    columns = ("", "rule", "subject", "severity", "within", "actual", "result")
    body = [
        (
            r.kind,
            r.rule,
            _short(r.subject, community),
            r.severity,
            r.within,
            r.actual,
            r.outcome.value,
        )
        for r in verdict.rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(columns, *body, strict=True)]
    lines = [head]
    for values in (columns, *body):
        lines.append("  " + "  ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=True)))
    passed = sum(r.outcome is Outcome.SUCCESS for r in verdict.rows)
    result = "PASS" if verdict.passed else "FAIL"
    lines.append(f"  {result}: {passed} of {len(verdict.rows)} rows pass")
    return "\n".join(lines).rstrip()
