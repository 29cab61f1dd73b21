"""The visit rule: a periodic check run from the engine's tick, not a stream rule.

Whether a resident has been visited this month is a question about the calendar,
not about a message, so it does not fit ``Engine.evaluate``. Every few minutes
the listener calls ``VisitCheck.run(conn, now)``, which

1. imports new ``visit_checkin`` device events into ``visits`` (``store.visits``);
2. for each community this worker owns, computes the month's coverage
   (``core.visits``) and raises, for each resident under a policy and not yet
   visited, a ``warning`` from the community's deadline day (default the 25th)
   and a ``major`` on the month's last day (the escalation; an acknowledged
   warning re-opens);
3. clears (auto-resolves) the alert of a resident who has since been visited.

Subjects are ``resident:<id>/<YYYY-MM>``: each month's miss is its own alert.
Titles carry the resident's id, never their name (alerts are read by every role).
The alert changes go through the same store transaction as the engine's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from paho.mqtt.client import topic_matches_sub

from alerts.model import AlertChange, ChangeKind
from core.rules import Rule, Severity, parse_rule
from core.visits import Month, alert_severity
from store import visits as visits_store

__all__ = ["VISIT_CHECK_EVERY_S", "VISIT_RULE", "VisitCheck", "visit_subject"]

Conn = psycopg.Connection[Any]
# A day's granularity rule: every 5 minutes is prompt and costs one query per community.
VISIT_CHECK_EVERY_S = 300.0
_RANK = {s.value: i for i, s in enumerate(Severity)}

VISIT_RULE: Rule = parse_rule(
    {
        "id": "visit-overdue",
        "type": "event",
        "title": "Resident not visited this month",
        "description": "Built in (alerts/visit_check.py): a resident under a visit policy"
        " not yet visited by the community's deadline day; major on the month's last day.",
        "severity": "warning",
        "events": ["visit_checkin"],
    }
)


def visit_subject(resident_id: str, month: Month) -> str:
    return f"resident:{resident_id}/{month}"


class VisitCheck:
    def __init__(self, *, topic_filter: str = "community/+/+/+/+") -> None:
        self.topic_filter = topic_filter

    def _owned(self, community_id: str) -> bool:
        topic = f"community/{community_id}/access/any/event"
        return bool(topic_matches_sub(self.topic_filter, topic))

    def run(self, conn: Conn, now: datetime) -> list[AlertChange]:
        visits_store.import_checkins(conn)
        communities = visits_store.communities_in_programme(conn)
        changes: list[AlertChange] = []
        for community_id, time_zone, deadline in communities:
            if self._owned(community_id):
                changes += self._community(conn, community_id, ZoneInfo(time_zone), deadline, now)
        return changes

    def _community(
        self, conn: Conn, community_id: str, tz: ZoneInfo, deadline: int, now: datetime
    ) -> list[AlertChange]:
        month = Month.of(now, tz)
        found = visits_store.community_coverage(conn, community_id, month, now)
        if found is None:  # deleted since the list was read
            return []
        # Per subject of this month: the highest severity ever raised, and whether active.
        seen: dict[str, tuple[int, bool]] = {}
        for subject, severity, active in visits_store.visit_alerts(
            conn, VISIT_RULE.id, community_id, month
        ):
            rank, was_active = seen.get(subject, (-1, False))
            seen[subject] = (max(rank, _RANK[severity]), was_active or active)
        statuses = found.coverage.statuses
        return self._changes(community_id, month, tz, deadline, now, statuses, seen)

    @staticmethod
    def _changes(
        community_id: str,
        month: Month,
        tz: ZoneInfo,
        deadline: int,
        now: datetime,
        statuses: Sequence[Any],
        seen: dict[str, tuple[int, bool]],
    ) -> list[AlertChange]:
        at = now.timestamp()
        changes = []
        for status in statuses:
            subject = visit_subject(status.resident_id, month)
            rank, active = seen.get(subject, (-1, False))
            severity = alert_severity(status, month, tz, now, deadline)
            if severity is None:
                if status.visits > 0 and active:
                    changes.append(
                        AlertChange(
                            ChangeKind.CLEAR,
                            VISIT_RULE,
                            subject,
                            community_id,
                            at,
                            VISIT_RULE.severity,
                            "Resident visited",
                            details={"resident_id": status.resident_id, "month": str(month)},
                        )
                    )
                continue
            if _RANK[severity] <= rank:
                continue  # raised already at this level (or higher), maybe resolved since
            title = f"Resident {status.resident_id} not visited in {month}" + (
                ": month ends today" if severity == "major" else f" by day {deadline}"
            )
            changes.append(
                AlertChange(
                    ChangeKind.RAISE,
                    VISIT_RULE,
                    subject,
                    community_id,
                    at,
                    Severity(severity),
                    title,
                    details={
                        "resident_id": status.resident_id,
                        "month": str(month),
                        "policy": status.policy.value,
                        "attempts": status.attempts,
                        "deadline_day": deadline,
                    },
                )
            )
        return changes
