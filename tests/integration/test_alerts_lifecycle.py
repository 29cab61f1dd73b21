"""The alert lifecycle against a real PostgreSQL, with a clock the test moves."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from alerts.model import AlertChange, ChangeKind
from alerts.store import AlertStore
from core.rules import Severity, parse_rule
from smartcommunity.embedded import EmbeddedPostgres
from store.maintenance_windows import MaintenanceWindow
from tests.integration.alerts_support import (
    T0,
    c1_listener,
    event,
    make_listener,
    reading,
    rows,
    setup_devices,
    sos_change,
)
from tests.rule_samples import HEART_RATE_HIGH

pytestmark = pytest.mark.integration

TWO_WEARABLES = [("w1", "wearable", None), ("w2", "wearable", None)]

SOS: dict[str, Any] = {
    "id": "sos",
    "type": "event",
    "title": "SOS",
    "severity": "major",
    "events": ["sos_pressed"],
    "auto_resolve": False,
    "escalation": {"after": "2m", "max_steps": 2},
}
HR: dict[str, Any] = {
    **HEART_RATE_HIGH,
    "id": "hr",
    "title": "Heart rate above 120 for 10 min",
}


def change(device: str, at: float, severity: Severity = Severity.MAJOR) -> AlertChange:
    return sos_change(device, at, severity, rule=SOS)


def test_concurrent_raises_make_one_alert_and_an_occurrence_count(
    fresh_database_url: str,
) -> None:
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", None)])
    workers = 8
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def raise_once(n: int) -> None:
        store = AlertStore(url=fresh_database_url, worker=f"w{n}")
        try:
            barrier.wait()
            store.apply([change("w1", T0.timestamp() + n / 1000)], {}, T0.timestamp())
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=raise_once, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    alerts = rows(fresh_database_url, "SELECT occurrences, state FROM alerts")
    assert alerts == [(workers, "open")]
    history = rows(fresh_database_url, "SELECT action FROM alert_history")
    assert history == [("raised",)]


def test_the_database_refuses_a_second_active_alert(fresh_database_url: str) -> None:
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", None)])
    store = AlertStore(url=fresh_database_url, worker="w")
    store.apply([change("w1", T0.timestamp())], {}, T0.timestamp())
    store.close()
    with psycopg.connect(fresh_database_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO alerts (rule_id, subject, community_id, rule_type, severity,"
            " initial_severity, state, title, first_seen, last_seen, raised_at)"
            " VALUES ('sos', 'device:w1', 'c1', 'event', 'major', 'major', 'open', 'x',"
            " now(), now(), now())"
        )


def test_raise_escalate_then_resolve_with_history(fresh_database_url: str) -> None:
    clock, listener = c1_listener(fresh_database_url, [SOS])
    try:
        listener.committed([event("w1", "sos_pressed", clock.now, {"button": "side"})])
        listener.committed([event("w1", "sos_pressed", clock.at(30), {})])  # pressed again
        listener.tick(clock.advance(119))
        assert rows(fresh_database_url, "SELECT severity, occurrences FROM alerts") == [
            ("major", 2)
        ]
        listener.tick(clock.advance(1))  # two minutes unacknowledged
        assert rows(fresh_database_url, "SELECT severity, escalation_level FROM alerts") == [
            ("critical", 1)
        ]
        listener.tick(clock.advance(120))
        listener.tick(clock.advance(120))
        assert rows(fresh_database_url, "SELECT severity, escalation_level FROM alerts") == [
            ("critical", 2)  # max_steps: it stops
        ]
    finally:
        listener.stop()
    history = rows(
        fresh_database_url, "SELECT action, actor, severity FROM alert_history ORDER BY id"
    )
    assert history == [
        ("raised", "engine", "major"),
        ("escalated", "engine", "critical"),
        ("escalated", "engine", "critical"),
    ]


def test_auto_resolve_after_hysteresis_and_a_new_alert_next_time(fresh_database_url: str) -> None:
    clock, listener = c1_listener(fresh_database_url, [{**HR, "for": 0, "min_breaches": 1}])
    try:
        listener.committed([reading("w1", "heart_rate", clock.now, 130)])
        listener.committed([reading("w1", "heart_rate", clock.at(60), 115)])  # hysteresis
        assert rows(fresh_database_url, "SELECT state FROM alerts") == [("open",)]
        listener.committed([reading("w1", "heart_rate", clock.at(120), 100)])
        listener.committed([reading("w1", "heart_rate", clock.at(180), 131)])
    finally:
        listener.stop()
    alerts = rows(fresh_database_url, "SELECT state, resolved_by FROM alerts ORDER BY id")
    assert alerts == [("resolved", "engine"), ("open", None)]
    actions = rows(fresh_database_url, "SELECT action FROM alert_history ORDER BY id")
    assert [a for (a,) in actions] == ["raised", "auto_resolved", "raised"]


def test_restart_in_the_middle_of_a_for_window(fresh_database_url: str) -> None:
    clock, first = c1_listener(fresh_database_url, [HR])
    first.committed([reading("w1", "heart_rate", clock.now, 130)])
    first.committed([reading("w1", "heart_rate", clock.at(180), 128)])
    first.tick(clock.advance(240))
    first.stop()  # the process goes away at minute 4
    assert rows(fresh_database_url, "SELECT count(*) FROM alert_rule_state") == [(1,)]

    second = make_listener(fresh_database_url, clock, [HR])
    try:
        second.tick(clock.at(9 * 60 + 59))
        assert rows(fresh_database_url, "SELECT count(*) FROM alerts") == [(0,)]
        second.tick(clock.at(10 * 60))
        assert rows(fresh_database_url, "SELECT count(*), min(occurrences) FROM alerts") == [(1, 1)]
    finally:
        second.stop()

    third = make_listener(fresh_database_url, clock, [HR])
    try:
        third.tick(clock.at(20 * 60))
        third.committed([reading("w1", "heart_rate", clock.at(21 * 60), 135)])
    finally:
        third.stop()
    assert rows(fresh_database_url, "SELECT count(*), max(occurrences) FROM alerts") == [(1, 1)]


def test_an_event_committed_but_not_evaluated_before_a_crash_is_evaluated_on_start(
    fresh_database_url: str,
) -> None:
    clock, listener = c1_listener(fresh_database_url, [SOS])
    listener.committed([event("w1", "fall_detected", clock.now)])
    listener._save_watermark()
    listener.stop()
    # The pipeline committed this SOS, then died before the engine wrote its alert.
    with psycopg.connect(fresh_database_url) as conn:
        conn.execute(
            "INSERT INTO device_events (device_id, ts, event, data, received_at)"
            " VALUES ('w1', %s, 'sos_pressed', '{}', %s)",
            (clock.at(5), clock.at(5)),
        )
    for _ in range(2):  # and a second restart does not count it again
        again = make_listener(fresh_database_url, clock, [SOS])
        again.stop()
    assert rows(fresh_database_url, "SELECT rule_id, occurrences FROM alerts") == [("sos", 1)]


def test_maintenance_suppresses_and_records(fresh_database_url: str) -> None:
    setup_devices(fresh_database_url, "c1", [("w1", "wearable", "b3"), ("w2", "wearable", "b4")])
    store = AlertStore(url=fresh_database_url, worker="w")
    now = T0.timestamp()
    store.maintenance = [MaintenanceWindow(7, "c1", None, "b3", now - 60, now + 3600, "repairs")]
    b3 = change("w1", now)
    b3 = AlertChange(**{**{f: getattr(b3, f) for f in b3.__slots__}, "building": "b3"})
    notices = store.apply([b3, change("w2", now)], {}, now)
    assert [(n.alert["device_id"], n.action, n.notify) for n in notices] == [
        ("w1", "suppressed", False),
        ("w2", "raised", True),
    ]
    store.maintenance = []  # the window is over and the condition is back
    notices = store.apply([b3], {}, now + 7200)
    assert [(n.action, n.notify, n.alert["state"]) for n in notices] == [("raised", True, "open")]
    store.close()
    history = rows(
        fresh_database_url,
        "SELECT action, note FROM alert_history h JOIN alerts a ON a.id = h.alert_id"
        " WHERE a.device_id = 'w1' ORDER BY h.id",
    )
    assert history == [
        ("suppressed", "maintenance window 7: repairs"),
        ("unsuppressed", "maintenance over"),
    ]


def test_a_flood_becomes_one_grouped_alert_and_critical_ones_stay_apart(
    fresh_database_url: str,
) -> None:
    devices = [(f"w{n}", "wearable", None) for n in range(6)]
    setup_devices(fresh_database_url, "c1", devices)
    store = AlertStore(url=fresh_database_url, worker="w", flood_threshold=4, flood_window_s=600)
    now = T0.timestamp()
    first = store.apply([change(f"w{n}", now + n) for n in range(3)], {}, now)
    assert all(n.notify for n in first)
    flood = store.apply(
        [change("w3", now + 10), change("w4", now + 11, Severity.CRITICAL)], {}, now + 11
    )
    actions = [(n.alert["rule_id"], n.alert.get("device_id"), n.action, n.notify) for n in flood]
    assert actions == [
        ("sos", "w3", "raised", False),
        ("sos", "w4", "raised", True),  # critical: never hidden in a group
        ("system.flood", None, "raised", True),
    ]
    grouped = rows(
        fresh_database_url,
        "SELECT a.device_id FROM alerts a JOIN alerts g ON g.id = a.group_id"
        " WHERE g.rule_id = 'system.flood' ORDER BY a.device_id",
    )
    assert grouped == [("w0",), ("w1",), ("w2",), ("w3",)]
    assert store.end_floods(now + 300) == []  # still flooding
    ended = store.end_floods(now + 700)
    assert [(n.alert["rule_id"], n.action) for n in ended] == [("system.flood", "auto_resolved")]
    store.close()


def test_a_flood_groups_only_alerts_still_open(fresh_database_url: str) -> None:
    setup_devices(fresh_database_url, "c1", [(f"w{n}", "wearable", None) for n in range(5)])
    store = AlertStore(url=fresh_database_url, worker="w", flood_threshold=4, flood_window_s=600)
    now = T0.timestamp()
    auto = parse_rule({**SOS, "id": "auto", "auto_resolve": True})

    def raise_or_clear(kind: ChangeKind, device: str, at: float) -> AlertChange:
        return AlertChange(kind, auto, f"device:{device}", "c1", at, Severity.MAJOR, "A", device)

    store.apply([raise_or_clear(ChangeKind.RAISE, f"w{n}", now + n) for n in range(3)], {}, now)
    store.apply([raise_or_clear(ChangeKind.CLEAR, "w0", now + 5)], {}, now + 5)
    assert rows(fresh_database_url, "SELECT state FROM alerts WHERE device_id = 'w0'") == [
        ("resolved",)
    ]
    store.apply([raise_or_clear(ChangeKind.RAISE, f"w{n}", now + 10) for n in (3, 4)], {}, now + 10)
    grouped = rows(
        fresh_database_url,
        "SELECT a.device_id FROM alerts a JOIN alerts g ON g.id = a.group_id"
        " WHERE g.rule_id = 'system.flood' ORDER BY a.device_id",
    )
    assert grouped == [("w1",), ("w2",), ("w3",), ("w4",)]  # not the resolved w0
    store.close()


def test_data_the_database_refuses_does_not_hold_up_other_alerts(fresh_database_url: str) -> None:
    clock, listener = c1_listener(fresh_database_url, [SOS], TWO_WEARABLES)
    try:
        listener.committed(
            [
                event("w1", "sos_pressed", clock.now, {"n": "a\0b"}),  # jsonb refuses NUL
                event("w2", "sos_pressed", clock.now),
            ]
        )
        listener.committed([event("w1", "sos_pressed", clock.at(60))])
    finally:
        listener.stop()
    alerts = rows(
        fresh_database_url,
        "SELECT device_id, occurrences, details->>'n' FROM alerts ORDER BY device_id",
    )
    assert alerts == [("w1", 2, "a\ufffdb"), ("w2", 1, None)]
    assert listener.errors == 0


def test_a_database_outage_holds_alerts_and_writes_them_when_it_is_back(
    private_postgres: EmbeddedPostgres,
) -> None:
    url = private_postgres.url
    clock, listener = c1_listener(url, [SOS, {**HR, "for": 0, "min_breaches": 1}], TWO_WEARABLES)
    try:
        private_postgres.stop()
        # Readings committed just before the outage reach the engine now.
        listener.committed([event("w1", "sos_pressed", clock.now)])
        listener.committed([reading("w2", "heart_rate", clock.at(1), 130)])
        assert listener.errors == 0
        for _ in range(3):
            listener.tick(clock.advance(1))  # backs off, never raises
        private_postgres.start()
        listener._retry_at = 0.0  # the backoff would wait a few seconds more
        listener.tick(clock.advance(1))
    finally:
        listener.stop()
    assert rows(url, "SELECT rule_id, subject FROM alerts ORDER BY rule_id") == [
        ("hr", "device:w2"),
        ("sos", "device:w1"),
    ]


def test_an_acknowledged_pre_alarm_reopens_when_a_second_detector_confirms_it(
    fresh_database_url: str,
) -> None:
    fire = {
        "id": "fire",
        "type": "correlation",
        "title": "Confirmed fire",
        "severity": "critical",
        "single_severity": "major",
        "events": ["smoke_alarm"],
        "window": "120s",
        "auto_resolve": False,
    }
    clock, listener = c1_listener(
        fresh_database_url, [fire], [("s1", "fire", "3"), ("s2", "fire", "3")]
    )
    try:
        listener.committed([event("s1", "smoke_alarm", clock.now)])
        with psycopg.connect(fresh_database_url) as conn:
            conn.execute("UPDATE alerts SET state = 'acknowledged'")  # "going to verify"
        listener.committed([event("s2", "smoke_alarm", clock.at(40))])
    finally:
        listener.stop()
    assert rows(fresh_database_url, "SELECT severity, state, occurrences FROM alerts") == [
        ("critical", "open", 2)
    ]
    history = rows(
        fresh_database_url, "SELECT action, from_state, to_state FROM alert_history ORDER BY id"
    )
    assert history == [("raised", None, "open"), ("severity_raised", "acknowledged", "open")]
