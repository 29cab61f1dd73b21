"""The rules a community's incident targets must keep (core.incidents.target_problems),
against a plain statement of them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.incidents import DEFAULT_TARGETS, MAX_TARGET_S, Targets, target_problems


@given(st.lists(st.integers(min_value=-10, max_value=40 * 86400), min_size=5, max_size=5))
@settings(max_examples=200, deadline=None)
def test_target_problems_agrees_with_the_rules(values: list[int]) -> None:
    t = Targets(*values)
    keepable = all(0 < v <= MAX_TARGET_S for v in values) and (
        t.ack_s <= t.dispatch_s <= t.arrival_s <= t.resolve_s and t.accept_s <= t.arrival_s
    )
    assert (target_problems(t) == []) is keepable


def test_the_defaults_keep_the_rules() -> None:
    assert all(target_problems(t) == [] for t in DEFAULT_TARGETS.values())
