"""Visit arithmetic: months in Beijing time, due and overdue, the visit rule's clock,
and service figures against hand-computed values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core.response_figures import AlertRecord, figures, percentile
from core.visits import (
    Month,
    Outcome,
    Policy,
    Standing,
    Visit,
    alert_severity,
    coverage,
    resident_status,
)

BJ = ZoneInfo("Asia/Shanghai")
NOV = Month(2026, 11)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def bj(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BJ)


def test_month_bounds_are_beijing_midnights() -> None:
    assert NOV.bounds(BJ) == (utc(2026, 10, 31, 16), utc(2026, 11, 30, 16))
    assert Month(2026, 12).next() == Month(2027, 1)
    assert Month.parse("2026-11") == NOV
    assert str(NOV) == "2026-11"
    assert NOV.last_day == date(2026, 11, 30)
    with pytest.raises(ValueError, match="YYYY-MM"):
        Month.parse("2026-13")


@pytest.mark.parametrize(
    ("started", "month"),
    [
        (utc(2026, 10, 31, 16, 30), NOV),  # 1 Nov 00:30 in Beijing, still 31 Oct in UTC
        (utc(2026, 10, 31, 15, 59), Month(2026, 10)),
        (utc(2026, 11, 30, 15, 30), NOV),  # 30 Nov 23:30 in Beijing
        (utc(2026, 11, 30, 16, 10), Month(2026, 12)),  # 1 Dec 00:10 in Beijing
    ],
)
def test_a_visit_counts_for_the_beijing_month(started: datetime, month: Month) -> None:
    visit = Visit("r1", started, Outcome.WELL)
    later = utc(2027, 2, 1)
    for candidate in (Month(2026, 10), NOV, Month(2026, 12)):
        status = resident_status("r1", Policy.MONTHLY, [visit], candidate, BJ, later)
        assert status.policy_met == (candidate == month), candidate
    assert Month.of(started, BJ) == month


def test_monthly_due_then_overdue_on_the_deadline_then_missed() -> None:
    def standing(now: datetime, visits: list[Visit] | None = None) -> Standing:
        return resident_status("r1", Policy.MONTHLY, visits or [], NOV, BJ, now).standing

    assert standing(bj(2026, 11, 24, 23, 59)) is Standing.DUE
    assert standing(bj(2026, 11, 25, 0, 0)) is Standing.OVERDUE
    assert standing(bj(2026, 12, 1, 0, 0)) is Standing.MISSED
    not_home = [Visit("r1", bj(2026, 11, 3, 10), Outcome.NOT_AT_HOME)]
    status = resident_status("r1", Policy.MONTHLY, not_home, NOV, BJ, bj(2026, 11, 26))
    assert (status.standing, status.visits, status.attempts) == (Standing.OVERDUE, 0, 1)
    seen = [Visit("r1", bj(2026, 11, 26, 10), Outcome.NEEDS_FOLLOW_UP)]
    assert standing(bj(2026, 11, 27), seen) is Standing.OK
    # A visit later than "now" is not known yet.
    assert standing(bj(2026, 11, 20), seen) is Standing.DUE


def test_weekly_policy_counts_weeks_that_began_in_the_month() -> None:
    # November 2026 begins on a Sunday: its weeks begin on the 2nd, 9th, 16th, 23rd, 30th.
    visits = [
        Visit("r1", bj(2026, 11, 3, 10), Outcome.WELL),
        Visit("r1", bj(2026, 11, 17, 10), Outcome.WELL),
    ]
    status = resident_status("r1", Policy.WEEKLY, visits, NOV, BJ, bj(2026, 11, 20))
    assert status.standing is Standing.OVERDUE
    assert status.missed_weeks == (date(2026, 11, 9),)
    assert not status.policy_met
    assert status.visits == 2
    ok = resident_status("r1", Policy.WEEKLY, visits[:1], NOV, BJ, bj(2026, 11, 8, 23))
    assert ok.standing is Standing.OK
    due = resident_status("r1", Policy.WEEKLY, visits[:1], NOV, BJ, bj(2026, 11, 10))
    assert due.standing is Standing.DUE


def test_weekly_policy_is_judged_only_on_weeks_ended_within_the_month() -> None:
    # December 2026: its first Monday is the 7th, that week ends on the 14th.
    dec = Month(2026, 12)
    never = resident_status("r1", Policy.WEEKLY, [], dec, BJ, bj(2026, 12, 10))
    assert not never.policy_met  # no week has ended yet: nothing proven
    assert never.standing is Standing.DUE
    weekly = [Visit("r1", bj(2026, 11, d, 10), Outcome.WELL) for d in (3, 10, 17, 24)]
    # After the month: the week of the 30th runs into December and is not November's.
    late = resident_status("r1", Policy.WEEKLY, weekly, NOV, BJ, bj(2026, 12, 20))
    assert late.missed_weeks == ()
    assert late.policy_met
    assert late.standing is Standing.OK


def test_coverage_rate_and_lists() -> None:
    residents = [
        ("a", Policy.MONTHLY),
        ("b", Policy.MONTHLY),
        ("c", Policy.MONTHLY),
        ("d", Policy.WEEKLY),
        ("e", Policy.NONE),
    ]
    visits = [
        Visit("a", bj(2026, 11, 2, 9), Outcome.WELL),
        Visit("b", bj(2026, 11, 2, 9), Outcome.NOT_AT_HOME),
        Visit("d", bj(2026, 11, 3, 9), Outcome.WELL),
        Visit("e", bj(2026, 11, 3, 9), Outcome.WELL),
    ]
    cov = coverage(residents, visits, NOV, BJ, bj(2026, 11, 26))
    assert (cov.residents, cov.visited) == (4, 2)
    assert cov.visit_rate == 0.5
    assert cov.policy_met == 1  # d missed the weeks of the 9th, 16th
    assert [s.resident_id for s in cov.with_standing(Standing.OVERDUE)] == ["b", "c", "d"]
    assert coverage([], [], NOV, BJ, bj(2026, 11, 26)).visit_rate is None


def test_the_visit_rule_warns_on_the_deadline_and_escalates_at_month_end() -> None:
    def severity(
        now: datetime, visits: list[Visit] | None = None, deadline: int = 25
    ) -> str | None:
        status = resident_status("r1", Policy.MONTHLY, visits or [], NOV, BJ, now, deadline)
        return alert_severity(status, NOV, BJ, now, deadline)

    assert severity(bj(2026, 11, 24, 23, 59)) is None
    assert severity(bj(2026, 11, 25, 0, 0)) == "warning"
    assert severity(bj(2026, 11, 20), deadline=20) == "warning"
    assert severity(bj(2026, 11, 29, 23, 59)) == "warning"
    assert severity(bj(2026, 11, 30, 0, 0)) == "major"  # 29 Nov 16:00 UTC
    assert severity(utc(2026, 11, 29, 16, 0)) == "major"
    assert severity(bj(2026, 12, 1, 0, 0)) is None  # a new month: November is history
    visited = [Visit("r1", bj(2026, 11, 28), Outcome.WELL)]
    assert severity(bj(2026, 11, 30, 12), visited) is None


def test_percentile_interpolates_linearly() -> None:
    assert percentile([], 50) is None
    assert percentile([60.0, 120.0], 50) == 90.0
    assert percentile([60.0, 120.0, 180.0, 240.0, 600.0], 90) == pytest.approx(456.0)
    assert percentile([5.0], 90) == 5.0


def test_figures_equal_hand_computed_values() -> None:
    t0 = utc(2026, 11, 10, 2)

    def rec(
        cls: str, sev: str, ack: float | None, res: float | None, *, suppressed: bool = False
    ) -> AlertRecord:
        return AlertRecord(
            cls,
            sev,
            t0,
            None if ack is None else t0 + timedelta(seconds=ack),
            None if res is None else t0 + timedelta(seconds=res),
            suppressed,
        )

    fig = figures(
        [
            rec("fire", "critical", 60, 600),
            rec("fire", "major", 120, 1200),
            rec("fire", "critical", 240, 1800),
            rec("wearable", "critical", 180, None),
            rec("wearable", "major", 600, 3600),
            rec("locker", "warning", None, None),
            rec("fire", "warning", None, None, suppressed=True),
        ]
    )
    assert fig.alerts == 7
    assert fig.suppressed == 1
    assert fig.by_class_severity["fire"] == {
        "info": 0,
        "warning": 1,
        "minor": 0,
        "major": 1,
        "critical": 2,
    }
    assert fig.by_class_severity["wearable"]["critical"] == 1
    assert list(fig.by_class_severity) == ["fire", "locker", "wearable"]
    assert (fig.acknowledged, fig.resolved) == (5, 4)
    assert fig.ack_median_s == 180.0
    assert fig.ack_p90_s == pytest.approx(456.0)
    assert fig.resolve_median_s == 1500.0
    assert fig.resolve_p90_s == pytest.approx(3060.0)
    assert fig.fire_alerts == 3
    assert fig.fire_ack_within_target_share == pytest.approx(2 / 3)
    assert fig.ack_within_target_share == 0.5  # 60, 120, 180 s of 6 answerable
    assert figures([]).ack_median_s is None
