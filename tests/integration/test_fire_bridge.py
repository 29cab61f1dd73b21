"""The GB/T 26875.3 bridge over real TCP, into the real pipeline, broker and PostgreSQL.

Each test has a database of its own (``fresh_database_url``): the worker's shared one
carries what other files did (their webhooks' outbox, the built-in rules and windows,
rules of their communities), and these tests wait for the default pack's alerts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from core.gbt26875 import Command, TimeLabel, encode_frame
from core.gbt26875_units import SystemStatus, encode_unit
from firebridge.server import DEAD_LETTER_BURST
from firebridge.service import bridge_in_thread
from simulators.uitd import (
    FAULT,
    FIRE,
    MAIN_POWER_FAULT,
    NORMAL,
    SHANGHAI,
    SMOKE_1,
    SMOKE_2,
    Detector,
    SimulatedUitd,
)
from tests.integration.fire_bridge_support import (
    address_for,
    alert,
    bridge_settings,
    events,
    play,
    rows,
    setup_uitd,
    until,
    until_alert,
)
from tests.integration.support import pipeline_thread

pytestmark = pytest.mark.integration


# Bounds of polls for what the rule engine raises after a commit, for a loaded machine.
ALERT_WAIT_S = 60
# Retransmissions of a frame that must be confirmed (3 s apart): a bound, not a pace.
RETRIES = 10


async def _beat(uitd: SimulatedUitd) -> None:
    while True:
        await uitd.heartbeat()
        await asyncio.sleep(1.0)


def test_panel_incidents_end_to_end(fresh_database_url: str, mqtt_url: str, unique_id: str) -> None:
    """Fire alarm -> critical alert, confirmed only after commit; second detector
    confirms the fire; fault, power loss, a retransmission, a wrong clock and a cut
    link, each as the platform should see it. (How fast the alert comes is a figure
    of bench/fire_bridge.py, not an assertion here.)"""
    community, uitd_id = f"fb-{unique_id}", f"u-{unique_id}"
    address = setup_uitd(fresh_database_url, community, uitd_id, heartbeat_s=5)
    smoke1, panel = f"{uitd_id}-smoke1", f"{uitd_id}-panel"
    settings = bridge_settings(
        fresh_database_url, mqtt_url, f"fb-{unique_id}", commit_timeout_s=1.5
    )

    async def scenario(bridge_port: int, stack: contextlib.ExitStack) -> None:
        # Frames that must be confirmed are retransmitted as a UITD does, until the
        # commit: the bridge answers a frame only within its 1.5 s commit timeout,
        # which a loaded machine's pipeline can miss, and a retransmission is confirmed
        # once the row is there. RETRIES bounds the wait, it is no expected pace.
        uitd = SimulatedUitd(
            "127.0.0.1", bridge_port, address, confirm_timeout_s=3.0, retries=RETRIES
        )
        await uitd.connect()
        fire = uitd.frame(Command.SEND, encode_unit([uitd.component(SMOKE_1, NORMAL | FIRE)]))
        # A UITD beats between its frames; with the 5 s link timeout of this test, a
        # slow step of a loaded machine (the pipeline's start, an alert's wait) would
        # otherwise read as a cut link and the bridge would hang up. Until the clock
        # step, where only the skewed beat may go, and the cut that ends the test.
        beating = asyncio.create_task(_beat(uitd))
        # No pipeline yet: the broker takes the message but nobody commits it, so the
        # frame must not be confirmed.
        assert await uitd.send(fire, retries=0) is None
        assert events(fresh_database_url, smoke1, "fire_alarm") == 0
        await asyncio.to_thread(
            stack.enter_context,
            pipeline_thread(fresh_database_url, mqtt_url, f"pl-{unique_id}", community),
        )
        sent_at = datetime.now(UTC)
        assert await uitd.send(fire) == Command.CONFIRM  # the UITD retransmits
        # Confirmed means committed: the row is there the moment the confirm is.
        assert events(fresh_database_url, smoke1, "fire_alarm") == 1
        await until_alert(
            fresh_database_url,
            "fire.panel_alarm",
            f"device:{smoke1}",
            ALERT_WAIT_S,
            "the panel fire alarm",
        )
        severity, created_at, _ = (
            alert(fresh_database_url, "fire.panel_alarm", f"device:{smoke1}") or ()
        )
        assert severity == "critical"
        assert created_at >= sent_at  # raised by this frame

        # The same frame again (our confirm lost): confirmed, stored once.
        duplicates = bridge.counters["duplicates"]
        assert await uitd.send(fire) == Command.CONFIRM
        assert bridge.counters["duplicates"] == duplicates + 1
        assert events(fresh_database_url, smoke1, "fire_alarm") == 1

        # A second detector of the building confirms the fire (GB 50116).
        await uitd.send_unit([uitd.component(SMOKE_2, NORMAL | FIRE)])
        await until(
            lambda: (
                (alert(fresh_database_url, "fire.confirmed", f"building:{community}/b1") or ("",))[
                    0
                ]
                == "critical"
            ),
            ALERT_WAIT_S,
            "the confirmed fire",
        )
        # A fault on the first detector; its fire bit is gone: fire_alarm_cleared.
        assert await uitd.send_unit([uitd.component(SMOKE_1, NORMAL | FAULT)]) == Command.CONFIRM
        assert events(fresh_database_url, smoke1, "fault") == 1
        assert events(fresh_database_url, smoke1, "fire_alarm_cleared") == 1
        # Main power lost on the panel.
        status = SystemStatus(1, 1, NORMAL | MAIN_POWER_FAULT, uitd.label())
        assert await uitd.send_unit([status]) == Command.CONFIRM
        await until_alert(
            fresh_database_url,
            "fire.panel_main_power",
            f"device:{panel}",
            ALERT_WAIT_S,
            "the main power alert",
        )
        # A clock 10 minutes fast gets a clock sync (type 90), which the UITD confirms.
        beating.cancel()
        uitd.clock_offset = timedelta(minutes=10)
        assert await uitd.heartbeat() == Command.CONFIRM
        await until(lambda: uitd.clock_syncs == 1, 10, "the clock sync")
        await until(
            lambda: (
                rows(
                    fresh_database_url,
                    "SELECT outcome FROM uitd_commands WHERE uitd_id = %s AND kind = 'clock_sync'",
                    uitd_id,
                )
                == [("confirmed",)]
            ),
            10,
            "the clock sync's confirm",
        )
        assert abs(uitd.clock_offset.total_seconds()) < 5
        # The link is cut: past the heartbeat interval, the UITD is offline.
        await uitd.close()
        await until_alert(
            fresh_database_url,
            "fire.uitd_link_lost",
            f"device:{uitd_id}",
            ALERT_WAIT_S,
            "the UITD offline alert",
        )

    with bridge_in_thread(settings) as bridge, contextlib.ExitStack() as stack:
        assert bridge.port is not None
        asyncio.run(scenario(bridge.port, stack))


def test_refusals_are_denied_and_dead_lettered(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community, uitd_id = f"fr-{unique_id}", f"r-{unique_id}"
    address = setup_uitd(fresh_database_url, community, uitd_id)
    auto_id = f"a-{unique_id}"
    auto_address = setup_uitd(
        fresh_database_url, community, auto_id, auto_provision=True, detectors=False
    )
    stranger = Detector(zone=9, position=9)
    settings = bridge_settings(fresh_database_url, mqtt_url, f"fr-{unique_id}")

    async def scenario(port: int) -> None:
        uitd = SimulatedUitd("127.0.0.1", port, address, confirm_timeout_s=5.0, retries=0)
        await uitd.connect()
        # Garbage between frames is skipped; the connection stays and works.
        assert uitd._writer is not None
        uitd._writer.write(b"\x00garbage@#\x01")
        assert await uitd.heartbeat() == Command.CONFIRM
        # A bad checksum: denied, the raw frame kept.
        good = encode_frame(uitd.frame(Command.SEND))
        bad = good[:-3] + bytes([(good[-3] + 1) % 256]) + b"##"
        uitd._writer.write(bad)
        await until(
            lambda: (
                rows(
                    fresh_database_url,
                    "SELECT count(*) FROM dead_letters"
                    " WHERE reason = 'bad_checksum' AND payload = %s",
                    bad,
                )[0][0]
                == 1
            ),
            10,
            "the bad-checksum dead letter",
        )
        # A component nobody mapped, auto-provisioning off: unknown_device, denied.
        unknown = [uitd.component(stranger, NORMAL | FIRE)]
        assert await uitd.send_unit(unknown) == Command.DENY
        dead = rows(
            fresh_database_url,
            "SELECT reason, payload FROM dead_letters WHERE topic LIKE %s AND reason = %s",
            f"community/{community}/fire/{uitd_id}/%",
            "unknown_device",
        )
        assert len(dead) == 1
        assert bytes(dead[0][1]).startswith(b"@@")
        await uitd.close()
        # An unregistered UITD address: denied.
        ghost = SimulatedUitd("127.0.0.1", port, address_for(f"ghost-{unique_id}"), retries=0)
        await ghost.connect()
        assert await ghost.heartbeat() == Command.DENY
        await ghost.close()
        # A peer that sends only broken frames: a bounded number of dead letters, then
        # it is hung up on (it never was a UITD).
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        local = "127.0.0.1:{}".format(writer.get_extra_info("sockname")[1])
        writer.write(bad * (DEAD_LETTER_BURST + 20))
        await writer.drain()
        denials = 0
        # Until hung up on: a FIN, or a reset when our unread noise was still queued there.
        with contextlib.suppress(ConnectionResetError):
            while chunk := await asyncio.wait_for(reader.read(65536), 20):
                denials += chunk.count(b"##")
        assert denials <= DEAD_LETTER_BURST + 5
        writer.close()
        stored = rows(
            fresh_database_url,
            "SELECT count(*) FROM dead_letters WHERE topic = %s",
            f"gb26875/{local}",
        )[0][0]
        assert DEAD_LETTER_BURST <= stored <= DEAD_LETTER_BURST + 5
        # Auto-provisioning on: the component becomes a device in the UITD's building.
        auto = SimulatedUitd("127.0.0.1", port, auto_address, confirm_timeout_s=10.0)
        await auto.connect()
        assert await auto.send_unit([auto.component(stranger, NORMAL | FIRE)]) == Command.CONFIRM
        device = f"{auto_id}.s1-1.c9-9"
        assert rows(fresh_database_url, "SELECT building FROM devices WHERE id = %s", device) == [
            ("b1",)
        ]
        assert events(fresh_database_url, device, "fire_alarm") == 1
        await auto.close()

    play(settings, scenario, pipeline=f"pr-{unique_id}", community=community)


def test_time_label_is_read_in_the_community_zone(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    """A component status at 10:00 local (Asia/Shanghai) is stored at 02:00 UTC."""
    community, uitd_id = f"ft-{unique_id}", f"t-{unique_id}"
    address = setup_uitd(fresh_database_url, community, uitd_id)
    settings = bridge_settings(fresh_database_url, mqtt_url, f"ft-{unique_id}")
    local = datetime.now(UTC).astimezone(SHANGHAI).replace(microsecond=0)

    async def scenario(port: int) -> None:
        uitd = SimulatedUitd("127.0.0.1", port, address, confirm_timeout_s=10.0)
        await uitd.connect()
        status = uitd.component(SMOKE_2, NORMAL | FIRE)
        status = dataclasses.replace(status, time=TimeLabel.of(local))
        assert await uitd.send_unit([status]) == Command.CONFIRM
        await uitd.close()

    play(settings, scenario, pipeline=f"pt-{unique_id}", community=community)
    stored = rows(
        fresh_database_url,
        "SELECT ts FROM device_events WHERE device_id = %s AND event = 'fire_alarm'",
        f"{uitd_id}-smoke2",
    )
    assert stored == [(local.astimezone(UTC),)]


def test_cli_registers_maps_and_simulates(
    cli_database_url: str,
    mqtt_url: str,
    unique_id: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``fire-bridge register``, ``map``, ``list`` and ``simulate --uitd``, as an installer."""
    from smartcommunity.cli import main

    community, uitd_id = f"fl-{unique_id}", f"l-{unique_id}"
    setup_uitd(cli_database_url, community, f"seed-{unique_id}", detectors=False)  # the community
    address = address_for(uitd_id).hex()

    def register(device_id: str, *more: str) -> int:
        where = ["--community", community, "--device-id", device_id, "--address", address]
        return main(["fire-bridge", "register", *where, *more])

    assert register(uitd_id, "--building", "b7") == 0
    assert register("x" + uitd_id) == 1  # the address is taken
    assert (
        main(
            [
                "fire-bridge",
                "map",
                "--uitd",
                uitd_id,
                "--device-id",
                f"{uitd_id}-smoke",
                "--system-type",
                "1",
                "--system-address",
                "1",
                "--zone",
                "1",
                "--position",
                "1",
                "--component-type",
                "42",
            ]
        )
        == 0
    )
    assert main(["fire-bridge", "list"]) == 0
    assert uitd_id in capsys.readouterr().out
    settings = bridge_settings(cli_database_url, mqtt_url, f"fl-{unique_id}")
    with (
        pipeline_thread(cli_database_url, mqtt_url, f"pl-{unique_id}", community),
        bridge_in_thread(settings) as bridge,
    ):
        assert (
            main(
                [
                    "simulate",
                    "--uitd",
                    f"127.0.0.1:{bridge.port}",
                    "--uitd-address",
                    address,
                    "--incident",
                    "fire",
                    "--incident",
                    "fault",
                    "--pause",
                    "0",
                ]
            )
            == 0
        )
    assert "fire: confirmed" in capsys.readouterr().out
    assert events(cli_database_url, f"{uitd_id}-smoke", "fire_alarm") == 1
    assert events(cli_database_url, f"{uitd_id}-smoke", "fault") == 1
    assert rows(
        cli_database_url, "SELECT building FROM devices WHERE id = %s", f"{uitd_id}-smoke"
    ) == [("b7",)]
