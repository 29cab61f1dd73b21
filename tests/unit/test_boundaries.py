"""The pipeline's boundaries on their own: the supervisor, the poison quarantine,
rate-limited logging. The end-to-end versions are in
tests/integration/test_poison_proof.py."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.boundary import RateLimitedLog, internal_error
from gateway.bridge import InboundMessage
from gateway.quarantine import Quarantine
from gateway.supervisor import PipelineFailed, Supervisor


def _message(n: int) -> InboundMessage:
    return InboundMessage(f"community/c/wearable/d{n}/telemetry", b"{}%d" % n, 1, n, 0.0, 1)


# -- supervisor ---------------------------------------------------------------------


def test_a_thread_that_raises_fails_the_pipeline_and_says_so() -> None:
    stop = threading.Event()
    reports: list[tuple[str, str]] = []
    cleared: list[bool] = []
    supervisor = Supervisor(
        stop=stop,
        report=lambda s, f: reports.append((s, f)),
        on_failure=lambda: cleared.append(True),  # the quarantine's journal, in the service
    )

    def broken() -> None:
        raise KeyError("boom")

    supervisor.start("commit", broken).join()
    assert stop.is_set()
    assert cleared == [True]
    assert reports == [("failed", "commit: KeyError: 'boom'")]
    with pytest.raises(PipelineFailed) as info:
        supervisor.finished()
    assert info.value.thread == "commit"


def test_a_thread_that_returns_while_running_fails_the_pipeline() -> None:
    stop = threading.Event()
    supervisor = Supervisor(stop=stop)
    supervisor.start("listeners", lambda: None).join()
    assert supervisor.failure is not None
    assert "returned" in supervisor.failure.cause


def test_a_stalled_thread_is_found_by_the_heartbeat() -> None:
    stop = threading.Event()
    reports: list[str] = []
    supervisor = Supervisor(stop=stop, report=lambda s, _f: reports.append(s), stall_s=0.3)
    release = threading.Event()
    stuck = supervisor.start("intake", release.wait)  # never beats
    heartbeat = supervisor.start("heartbeat", supervisor.heartbeat_loop)
    heartbeat.join(30)
    release.set()
    stuck.join()
    assert supervisor.failure is not None
    assert supervisor.failure.thread == "intake"
    assert "no progress" in supervisor.failure.cause
    assert reports[-1] == "failed"


def test_a_service_thread_that_dies_before_the_pipeline_starts_stays_a_failure() -> None:
    """Its "failed" is not overwritten by the "running" the pipeline says on start."""
    stop = threading.Event()
    reports: list[str] = []
    supervisor = Supervisor(stop=stop, report=lambda s, _f: reports.append(s))

    def dies() -> None:
        raise RuntimeError("boom")

    supervisor.start_service("webhooks", dies).join()
    supervisor.starting()
    assert reports == ["failed"]
    with pytest.raises(PipelineFailed):
        supervisor.finished()


def test_a_clean_stop_is_no_failure() -> None:
    stop = threading.Event()
    reports: list[str] = []
    supervisor = Supervisor(stop=stop, report=lambda s, _f: reports.append(s))
    worker = supervisor.start("commit", stop.wait)
    heartbeat = supervisor.start("heartbeat", supervisor.heartbeat_loop)
    deadline = time.monotonic() + 30
    while "running" not in reports:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.05)
    stop.set()
    worker.join()
    heartbeat.join()
    supervisor.finished()
    assert supervisor.failure is None
    assert reports[-1] == "stopped"


# -- quarantine ---------------------------------------------------------------------


def test_two_crashes_with_a_message_in_flight_make_it_poison(tmp_path: Path) -> None:
    batch = [_message(n) for n in range(5)]
    first = Quarantine(tmp_path, crashes=2)
    assert first.sort(batch) == ([], batch, [])
    first.begin(batch)  # ... and the process dies

    second = Quarantine(tmp_path, crashes=2)
    poison, clean, suspects = second.sort([*batch, _message(9)])
    assert (poison, clean, suspects) == ([], [_message(9)], batch)
    for message in suspects[:3]:  # innocent: they pass alone and lose their strike
        second.end(second.begin([message]), [message])
    second.begin([batch[3]])  # ... and the process dies again, with only this one in flight

    third = Quarantine(tmp_path, crashes=2)
    poison, clean, suspects = third.sort(batch)
    assert poison == [batch[3]]
    assert clean == batch[:3]
    assert suspects == [batch[4]]  # in flight once only: still a suspect


def test_a_clean_stop_is_no_crash(tmp_path: Path) -> None:
    batch = [_message(n) for n in range(3)]
    quarantine = Quarantine(tmp_path, crashes=2)
    quarantine.begin(batch)
    assert quarantine.in_flight() == 1
    quarantine.close()
    assert Quarantine(tmp_path, crashes=2).sort(batch) == ([], batch, [])


# -- logging and dead letters --------------------------------------------------------


def test_internal_errors_are_logged_at_a_bounded_rate(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test.ratelimit"), every_s=3600)
    with caplog.at_level(logging.ERROR, logger="test.ratelimit"):
        assert log.error("first %s", "one")
        assert not log.error("second %s", "two")
        assert not log.error("third %s", "three")
    assert [r.getMessage() for r in caplog.records] == ["first one"]


def test_an_internal_error_dead_letter_carries_the_exception() -> None:
    dead = internal_error("t", b"x", datetime.now(UTC), ValueError("y" * 1000), "validation")
    assert dead.reason == "internal_error"
    assert dead.detail.startswith("validation: ValueError: yyy")
    assert len(dead.detail) <= 500
