"""The fire bridge under faults and load: SIGKILL between receipt and commit, duty
checks, and 200 UITDs at once (real TCP, broker and PostgreSQL). Each test has a database
of its own, as in test_fire_bridge.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from core.gbt26875 import Command, Frame
from core.gbt26875_units import encode_unit
from firebridge.service import bridge_in_thread
from gateway.bridge import parse_mqtt_url
from simulators.uitd import FIRE, NORMAL, SMOKE_1, SimulatedUitd
from smartcommunity.embedded import free_port
from tests.integration.fire_bridge_support import (
    bridge_settings,
    events,
    play,
    rows,
    setup_uitd,
    setup_uitds,
    start_bridge_process,
    until,
    until_alert,
)
from tests.integration.support import pipeline_thread, stop_process

pytestmark = pytest.mark.integration


def test_kill_between_receipt_and_commit(
    fresh_database_url: str, mqtt_url: str, unique_id: str, tmp_path: Path
) -> None:
    """SIGKILL while a fire alarm waits for its commit: the UITD retransmits to the
    restarted bridge and the alarm is stored once."""
    community, uitd_id = f"fk-{unique_id}", f"k-{unique_id}"
    address = setup_uitd(fresh_database_url, community, uitd_id)
    smoke1 = f"{uitd_id}-smoke1"
    port = free_port()
    log = tmp_path / "bridge.log"
    pipeline_id = f"pk-{unique_id}"
    # The pipeline's persistent session exists at the broker, but the pipeline is down:
    # what the bridge publishes is kept for it, and nothing is committed.
    with pipeline_thread(fresh_database_url, mqtt_url, pipeline_id, community):
        pass

    watcher = EventWatcher(mqtt_url, f"community/{community}/fire/+/event")

    async def first_attempt() -> Frame:
        uitd = SimulatedUitd("127.0.0.1", port, address, confirm_timeout_s=20.0, retries=0)
        await uitd.connect()
        frame = uitd.frame(Command.SEND, encode_unit([uitd.component(SMOKE_1, NORMAL | FIRE)]))
        sending = asyncio.create_task(uitd.send(frame))
        # Received and published (the broker has it), then killed before any commit.
        await until(lambda: watcher.seen.is_set(), 15, "the bridge to publish the alarm")
        os.kill(bridge.pid, signal.SIGKILL)
        assert await sending is None  # connection gone, no confirm
        await uitd.close()
        return frame

    bridge = start_bridge_process(fresh_database_url, mqtt_url, f"fbk-{unique_id}", port, log)
    try:
        _wait_listening(port, log)
        frame = asyncio.run(first_attempt())
        bridge.wait(10)
        assert events(fresh_database_url, smoke1, "fire_alarm") == 0
        with pipeline_thread(fresh_database_url, mqtt_url, pipeline_id, community):
            bridge = start_bridge_process(
                fresh_database_url, mqtt_url, f"fbk-{unique_id}", port, log
            )
            _wait_listening(port, log)

            async def retransmit() -> int | None:
                uitd = SimulatedUitd("127.0.0.1", port, address, confirm_timeout_s=10.0)
                await uitd.connect()
                try:
                    return await uitd.send(frame, retries=3)
                finally:
                    await uitd.close()

            assert asyncio.run(retransmit()) == Command.CONFIRM
            assert events(fresh_database_url, smoke1, "fire_alarm") == 1
            active = rows(
                fresh_database_url,
                "SELECT count(*) FROM alerts WHERE rule_id = 'fire.panel_alarm' AND subject = %s",
                f"device:{smoke1}",
            )
            assert active[0][0] <= 1
    finally:
        stop_process(bridge)
        watcher.close()


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def _wait_listening(port: int, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"bridge not listening on {port}: {_log_tail(log)[-2000:]}")


class EventWatcher:
    """Sees a message on the broker, as any subscriber would."""

    def __init__(self, mqtt_url: str, topic: str) -> None:
        address = parse_mqtt_url(mqtt_url)
        self.seen = threading.Event()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda *_: self.seen.set()
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert subscribed.wait(10), "watcher did not subscribe"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_duty_checks_answered_and_missed(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community = f"fd-{unique_id}"
    keen, asleep = f"d1-{unique_id}", f"d2-{unique_id}"
    keen_address = setup_uitd(fresh_database_url, community, keen, detectors=False)
    asleep_address = setup_uitd(fresh_database_url, community, asleep, detectors=False)
    settings = bridge_settings(
        fresh_database_url, mqtt_url, f"fd-{unique_id}", duty_check_every_s=1.0, duty_answer_s=2.0
    )

    def outcomes(uitd_id: str) -> set[str]:
        found = rows(
            fresh_database_url,
            "SELECT outcome FROM uitd_commands WHERE uitd_id = %s AND kind = 'duty_check'",
            uitd_id,
        )
        return {r[0] for r in found}

    async def scenario(port: int) -> None:
        one = SimulatedUitd("127.0.0.1", port, keen_address)
        two = SimulatedUitd("127.0.0.1", port, asleep_address, answer_duty_checks=False)
        await one.connect()
        await two.connect()
        assert await one.heartbeat() == Command.CONFIRM
        assert await two.heartbeat() == Command.CONFIRM
        await until(lambda: "answered" in outcomes(keen), 15, "an answered duty check")
        await until(lambda: "missed" in outcomes(asleep), 15, "a missed duty check")
        await until_alert(
            fresh_database_url,
            "fire.duty_check_missed",
            f"device:{asleep}",
            10,
            "the missed duty check alert",
        )
        assert events(fresh_database_url, keen, "duty_check_answered") >= 1
        await one.close()
        await two.close()

    play(settings, scenario, pipeline=f"pd-{unique_id}", community=community)


# The 200 UITDs' heartbeat interval: a beat a second leaves 9 s for an answer on a
# loaded machine (the bridge hangs up on a UITD silent past it).
HEARTBEAT_S = 10


def test_200_uitds_with_heartbeats_stay_up(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community = f"fc-{unique_id}"
    ids = [f"c{i}-{unique_id}" for i in range(200)]
    addresses = setup_uitds(fresh_database_url, community, ids, heartbeat_s=HEARTBEAT_S)
    settings = bridge_settings(fresh_database_url, mqtt_url, f"fc-{unique_id}")

    async def scenario(port: int) -> None:
        uitds = [SimulatedUitd("127.0.0.1", port, a, confirm_timeout_s=10.0) for a in addresses]
        await asyncio.gather(*(u.connect() for u in uitds))
        started = time.monotonic()

        async def beat(uitd: SimulatedUitd) -> None:
            # Past one heartbeat interval, beating every second: no link may be lost.
            # Each UITD beats on its own time, as in the field: a round of 200 beats in
            # step lasts as long as the slowest answer, which a loaded machine stretches
            # past the interval. Two beats at least, so that they span the interval.
            beats = 0
            while beats < 2 or time.monotonic() - started < HEARTBEAT_S + 1:
                assert await uitd.heartbeat() == Command.CONFIRM
                beats += 1
                await asyncio.sleep(1.0)

        await asyncio.gather(*(beat(u) for u in uitds))
        assert bridge.counters["links_lost"] == 0
        assert len(bridge.sessions) == len(uitds)
        await asyncio.gather(*(u.close() for u in uitds))

    with bridge_in_thread(settings) as bridge:
        assert bridge.port is not None
        asyncio.run(scenario(bridge.port))
