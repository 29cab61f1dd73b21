"""Opening an alert is idempotent per (rule, subject, episode): migration 0013.

A batch evaluated again after its alert was resolved (a worker killed after
commit and before the acknowledgement; another worker taking the shard over
and replaying) must not open the same episode twice, while a new episode of
the same rule and subject still opens a new alert.
"""

from __future__ import annotations

import psycopg
import pytest

from alerts.model import AlertChange, ChangeKind
from alerts.store import AlertStore
from core.rules import Severity, parse_rule
from tests.integration.alerts_support import T0, setup_devices
from tests.integration.test_alerts_lifecycle import SOS

pytestmark = pytest.mark.integration


def _sos(device: str, at: float, kind: ChangeKind = ChangeKind.RAISE) -> AlertChange:
    return AlertChange(
        kind=kind,
        rule=parse_rule({**SOS, "auto_resolve": True}),
        subject=f"device:{device}",
        community_id="c1",
        at=at,
        severity=Severity.MAJOR,
        title="SOS",
        device_id=device,
    )


def _alerts(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (str(r[0]), str(r[1]))
            for r in conn.execute("SELECT state, first_seen::text FROM alerts ORDER BY id")
        ]


def test_a_resolved_episode_evaluated_again_opens_nothing(fresh_database_url: str) -> None:
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", None)])
    now = T0.timestamp()
    first, second = (
        AlertStore(url=fresh_database_url, worker="a"),
        AlertStore(url=fresh_database_url, worker="b"),
    )
    try:
        # Worker a: the SOS is raised and, by its clear event, resolved.
        first.apply([_sos("w1", now)], {}, now)
        first.apply([_sos("w1", now + 5, ChangeKind.CLEAR)], {}, now + 5)
        assert [s for s, _ in _alerts(fresh_database_url)] == ["resolved"]
        # Worker b gets the same batch redelivered and evaluates it again.
        second.apply([_sos("w1", now)], {}, now + 10)
        assert [s for s, _ in _alerts(fresh_database_url)] == ["resolved"]
        # A later SOS of the same device is a new episode: a new alert.
        second.apply([_sos("w1", now + 60)], {}, now + 60)
        assert [s for s, _ in _alerts(fresh_database_url)] == ["resolved", "open"]
    finally:
        first.close()
        second.close()
