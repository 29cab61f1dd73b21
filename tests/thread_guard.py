"""A test fails when a thread it started outlives it (Home Assistant's verify_cleanup
is the model): a leaked pipeline, server or client would go on touching the broker
and the database under the next test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["THREAD_GRACE_S", "no_thread_outlives_its_test", "threads_end_within"]

# A thread a test started may take this long to finish once the test's own teardown
# has told it to stop (a server's graceful shutdown, a client's network loop).
THREAD_GRACE_S = 10.0


@contextmanager
def threads_end_within(grace_s: float) -> Iterator[None]:
    """Fail unless every thread started inside the block has ended ``grace_s`` after it.

    ``_DummyThread`` stands for a thread started outside ``threading`` (not ours).
    """
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + grace_s
    stray: list[str] = []
    for thread in set(threading.enumerate()) - before:
        if isinstance(thread, threading._DummyThread):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stray.append(thread.name)
    if stray:
        pytest.fail(f"threads outlived the test: {sorted(stray)}", pytrace=False)


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    """Every test: its threads end with it. Threads of session- and module-scoped
    fixtures start before this fixture runs and are not counted."""
    with threads_end_within(THREAD_GRACE_S):
        yield
