"""Online, silent, offline or retired: how a device's presence is judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.connectivity import Connectivity, Presence, judge

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def presence(
    *,
    data: timedelta | None = None,
    online: bool | None = None,
    status: timedelta | None = None,
    state: str = "active",
) -> Presence:
    return Presence(
        state=state,
        expected_interval_s=60,
        last_received_at=None if data is None else NOW - data,
        online=online,
        status_at=None if status is None else NOW - status,
    )


S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (presence(), Connectivity.NEVER_SEEN),
        (presence(data=30 * S), Connectivity.ONLINE),
        (presence(data=119 * S), Connectivity.ONLINE),
        (presence(data=121 * S), Connectivity.SILENT),  # two intervals without data
        (presence(online=True, status=10 * S), Connectivity.ONLINE),  # connected, no data yet
        (presence(data=600 * S, online=True, status=600 * S), Connectivity.SILENT),  # hung
        (presence(data=30 * S, online=False, status=5 * S), Connectivity.OFFLINE),  # Last Will
        (presence(online=False, status=5 * S), Connectivity.OFFLINE),
        # Data after the offline status: it came back (a late Will must not win).
        (presence(data=2 * S, online=False, status=5 * S), Connectivity.ONLINE),
        (presence(data=2 * S, state="decommissioned"), Connectivity.RETIRED),
    ],
)
def test_connectivity(case: Presence, expected: Connectivity) -> None:
    assert judge(case, NOW) == expected


def test_a_device_goes_silent_as_the_clock_moves() -> None:
    seen = presence(data=timedelta(0))
    assert [judge(seen, NOW + k * 30 * S) for k in (0, 4, 5)] == [
        Connectivity.ONLINE,
        Connectivity.ONLINE,
        Connectivity.SILENT,
    ]
