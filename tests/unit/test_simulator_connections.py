"""Which fleets get a connection, and a Last Will, per device."""

from __future__ import annotations

import argparse

from simulators.cli import add_arguments
from simulators.community import demo_devices
from simulators.fleet import PER_DEVICE_AUTO_MAX
from simulators.publisher import Simulator

URL = "mqtt://127.0.0.1:1"  # never dialled


def test_small_fleets_get_a_will_per_device_large_ones_share_a_connection() -> None:
    small = demo_devices(community_id="u", count=PER_DEVICE_AUTO_MAX, seed=0)
    large = demo_devices(community_id="u", count=PER_DEVICE_AUTO_MAX + 1, seed=0)
    assert Simulator(devices=small, mqtt_url=URL)._per_device
    assert not Simulator(devices=large, mqtt_url=URL)._per_device
    assert not Simulator(devices=small, mqtt_url=URL, per_device_connections=False)._per_device
    assert Simulator(devices=large, mqtt_url=URL, per_device_connections=True)._per_device


def test_cli_connection_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).per_device_connections is None
    assert parser.parse_args(["--per-device-connections"]).per_device_connections is True
    assert parser.parse_args(["--shared-connection"]).per_device_connections is False
