"""Duty rosters: who is on duty across midnight, the week's end, in Asia/Shanghai, with
leave and swaps; the escalation ladder and the incident figures."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.incidents import (
    CONTROL_ROOM,
    DEFAULT_TARGETS,
    IncidentRecord,
    IncidentType,
    Progress,
    TargetKind,
    auto_dispatches,
    classify,
    due_targets,
    incident_figures,
    next_on_ladder,
)
from core.roster import Absence, AbsenceKind, Shift, on_duty, shift_covers, uncovered_until

SHANGHAI = ZoneInfo("Asia/Shanghai")
# Sunday night 22:00 to Monday 06:00, Monday day 06:00-14:00, Monday late 14:00-22:00.
NIGHT = Shift("wang", 6, time(22), time(6))
DAY = Shift("li", 0, time(6), time(14))
LATE = Shift("zhao", 0, time(14), time(22))
ROSTER = [NIGHT, DAY, LATE]


def bj(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A Beijing wall-clock time as an aware UTC instant (what the database holds)."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


def test_a_night_shift_runs_past_midnight_and_the_weeks_end() -> None:
    # 2026-11-29 is a Sunday, 2026-11-30 a Monday.
    assert on_duty(ROSTER, [], bj(2026, 11, 29, 21, 59), SHANGHAI) == []
    assert on_duty(ROSTER, [], bj(2026, 11, 29, 22, 0), SHANGHAI) == ["wang"]
    assert on_duty(ROSTER, [], bj(2026, 11, 30, 0, 0), SHANGHAI) == ["wang"]
    assert on_duty(ROSTER, [], bj(2026, 11, 30, 5, 59), SHANGHAI) == ["wang"]
    assert on_duty(ROSTER, [], bj(2026, 11, 30, 6, 0), SHANGHAI) == ["li"]
    # The Sunday shift's morning part is Monday only, not Sunday morning.
    assert on_duty(ROSTER, [], bj(2026, 11, 29, 3, 0), SHANGHAI) == []


def test_the_community_zone_decides_not_utc() -> None:
    # 22:30 UTC on Sunday is 06:30 Monday in Beijing: the day shift, not the night.
    moment = datetime(2026, 11, 29, 22, 30, tzinfo=UTC)
    assert on_duty(ROSTER, [], moment, SHANGHAI) == ["li"]
    assert on_duty(ROSTER, [], moment, ZoneInfo("UTC")) == ["wang"]


def test_a_24_hour_shift_and_the_saturday_to_sunday_boundary() -> None:
    full = Shift("sun", 5, time(8), time(8))  # Saturday 08:00 to Sunday 08:00
    assert on_duty([full], [], bj(2026, 11, 28, 8, 0), SHANGHAI) == ["sun"]
    assert on_duty([full], [], bj(2026, 11, 29, 7, 59), SHANGHAI) == ["sun"]
    assert on_duty([full], [], bj(2026, 11, 29, 8, 0), SHANGHAI) == []


def test_leave_takes_the_responder_off_and_a_swap_puts_the_substitute_on() -> None:
    leave = Absence("wang", AbsenceKind.LEAVE, bj(2026, 11, 29, 0), bj(2026, 11, 30, 2))
    assert on_duty(ROSTER, [leave], bj(2026, 11, 30, 1, 0), SHANGHAI) == []
    assert on_duty(ROSTER, [leave], bj(2026, 11, 30, 2, 0), SHANGHAI) == ["wang"]
    swap = Absence("li", AbsenceKind.SWAP, bj(2026, 11, 30, 6), bj(2026, 11, 30, 14), "zhao")
    assert on_duty(ROSTER, [swap], bj(2026, 11, 30, 9, 0), SHANGHAI) == ["zhao"]
    assert on_duty(ROSTER, [swap], bj(2026, 11, 30, 15, 0), SHANGHAI) == ["zhao"]


def test_a_gap_in_the_roster_is_found() -> None:
    # Monday 22:00 has nobody until the next Sunday night.
    gap = uncovered_until(ROSTER, [], bj(2026, 11, 30, 12, 0), SHANGHAI)
    assert gap == bj(2026, 11, 30, 22, 0)
    covered = [Shift("x", d, time(0), time(0)) for d in range(7)]
    assert uncovered_until(covered, [], bj(2026, 11, 30, 12, 0), SHANGHAI) is None


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        on_duty(ROSTER, [], datetime(2026, 11, 30, 12), SHANGHAI)  # noqa: DTZ001
    with pytest.raises(ValueError, match="weekday"):
        Shift("x", 7, time(1), time(2))


@given(
    weekday=st.integers(0, 6),
    start=st.times(),
    end=st.times(),
    moment=st.datetimes(
        min_value=datetime(2020, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        max_value=datetime(2030, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
)
def test_a_shift_covers_a_moment_exactly_when_its_span_does(
    weekday: int, start: time, end: time, moment: datetime
) -> None:
    """Against a direct computation: the shift's span in the week containing moment."""
    shift = Shift("x", weekday, start, end)
    local = moment.astimezone(SHANGHAI).replace(tzinfo=None)
    length = datetime.combine(local.date(), end) - datetime.combine(local.date(), start)
    if length <= timedelta(0):
        length += timedelta(days=1)
    monday = datetime.combine(local.date() - timedelta(days=local.weekday()), time())
    spans = []
    for week in (-1, 0):
        begin = datetime.combine(
            (monday + timedelta(days=weekday + 7 * week)).date(), start
        ).replace(microsecond=start.microsecond)
        spans.append((begin, begin + length))
    expected = any(a <= local < b for a, b in spans)
    assert shift_covers(shift, moment.astimezone(SHANGHAI)) == expected


# --- incidents --------------------------------------------------------------------------


def test_alerts_are_classified_and_only_confirmed_fire_and_sos_dispatch_by_themselves() -> None:
    assert classify("fire.confirmed", "fire") is IncidentType.FIRE
    assert classify("wearable.sos", "wearable") is IncidentType.SOS
    assert classify("access.door_forced", "access") is IncidentType.INTRUSION
    assert classify("locker.overdue", "locker") is IncidentType.OTHER
    assert auto_dispatches("fire.confirmed", "critical")
    assert not auto_dispatches("fire.confirmed", "major")  # a pre-alarm: one detector
    assert auto_dispatches("wearable.sos", "critical")
    assert not auto_dispatches("access.door_forced", "critical")


def test_targets_fall_due_once_each_and_not_after_resolution() -> None:
    opened = bj(2026, 11, 30, 10, 0)
    fire = DEFAULT_TARGETS[IncidentType.FIRE]
    assert fire.arrival_s == 180
    p = Progress(opened, opened + timedelta(seconds=20), opened + timedelta(seconds=30), None, None)
    assert due_targets(p, fire, opened + timedelta(seconds=179), []) == []
    assert due_targets(p, fire, opened + timedelta(seconds=180), []) == [TargetKind.ARRIVAL]
    assert due_targets(p, fire, opened + timedelta(seconds=180), ["arrival"]) == []
    done = Progress(opened, None, None, None, opened + timedelta(seconds=5))
    assert due_targets(done, fire, opened + timedelta(days=1), []) == []


def test_the_ladder_goes_roster_then_leader_then_control_room() -> None:
    assert next_on_ladder(["a", "b"], "boss", ["a"]) == "b"
    assert next_on_ladder(["a", "b"], "boss", ["a", "b"]) == "boss"
    assert next_on_ladder(["a", "b"], "boss", ["a", "b", "boss"]) == CONTROL_ROOM
    assert next_on_ladder([], None, []) == CONTROL_ROOM


def test_figures_median_p90_and_share_within_target() -> None:
    opened = bj(2026, 11, 30, 10, 0)
    now = opened + timedelta(hours=2)

    def rec(arrive_s: float | None, kind: str = "fire", esc: int = 0) -> IncidentRecord:
        arrived = None if arrive_s is None else opened + timedelta(seconds=arrive_s)
        return IncidentRecord(kind, opened, opened + timedelta(seconds=10), opened, arrived,
                              None, 180.0, esc)  # fmt: skip

    figures = incident_figures([rec(60), rec(120), rec(240, esc=2), rec(None, "sos")], now)
    assert figures.incidents == 4
    assert figures.by_type == {"fire": 3, "sos": 1}
    assert figures.arrive.count == 3
    assert figures.arrive.median_s == 120
    assert figures.arrive.p90_s == pytest.approx(216)
    assert figures.acknowledge.median_s == 10
    # 60 and 120 within 180 s; 240 late; the SOS never reached and past its target.
    assert figures.arrived_within_target == 2
    assert figures.arrival_within_target_share == pytest.approx(0.5)
    assert figures.escalations == 2
    assert incident_figures([], now).arrival_within_target_share is None
