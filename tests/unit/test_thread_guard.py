"""The guard that fails a test whose threads outlive it (tests/thread_guard.py)."""

from __future__ import annotations

import threading

import pytest

from tests.thread_guard import threads_end_within


def test_a_thread_left_running_fails_the_test() -> None:
    release = threading.Event()
    leaked = threading.Thread(target=release.wait, name="leaked-worker")
    try:
        with (
            pytest.raises(pytest.fail.Exception, match="leaked-worker"),
            threads_end_within(0.2),
        ):
            leaked.start()
    finally:
        release.set()
        leaked.join()


def test_a_thread_that_ends_within_the_grace_passes() -> None:
    stop = threading.Event()
    with threads_end_within(10.0):
        ending = threading.Thread(target=stop.wait, name="ending-worker")
        ending.start()
        stop.set()  # told to stop as the block ends; it finishes during the grace
    assert not ending.is_alive()


def test_threads_started_before_are_not_counted() -> None:
    release = threading.Event()
    earlier = threading.Thread(target=release.wait, name="session-server")
    earlier.start()
    try:
        with threads_end_within(0.1):
            pass
    finally:
        release.set()
        earlier.join()
