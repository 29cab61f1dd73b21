"""``smartcommunity demo``: a live demo community on one machine.

Starts what is not configured (an embedded broker and PostgreSQL under
``SC_DATA_DIR``), registers a demo community, then runs the pipeline, the API
and the simulator together until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import FrameType
from typing import Any

import psycopg
import uvicorn

from api.app import create_app
from core.models import Device
from core.settings import Settings
from gateway.process import run_pipeline
from simulators.checker import ApiAlerts
from simulators.community import demo_devices
from simulators.publisher import Simulator
from simulators.registration import register_scenario, retire_scenario
from simulators.scenario import BoundScenario, load_scenario, shipped_scenarios
from simulators.scenario_run import run_scenarios
from smartcommunity.demo_panel import DEMO_UITD, ensure_demo_uitd, run_panel_demo
from smartcommunity.embedded import EmbeddedBroker, EmbeddedPostgres
from store import places, schema
from store.accounts import create_token
from store.devices import SimulatedDevice, register_simulated

__all__ = ["register_devices", "run_demo"]

_LOG = logging.getLogger(__name__)
DEMO_COMMUNITY = "demo-001"
# Reproducible demo: the same devices and the same day every run.
DEMO_SEED = 2026
# Scripted incidents played against the running demo, each in a community of its own.
DEMO_INCIDENTS = ("fire-confirmed", "sos", "forced-door", "fall-at-night")
# Long enough for the board to be open; then often enough to see them again.
INCIDENTS_FIRST_S = 20.0
INCIDENTS_EVERY_S = 300.0


def register_devices(url: str, community_id: str, name: str, devices: list[Device]) -> None:
    """Register a community and its devices; already registered ones are left as they are."""
    with psycopg.connect(url) as conn:
        places.ensure_community(conn, community_id, name)
        register_simulated(conn, [SimulatedDevice.of(d) for d in devices])


def _play_incidents(
    stop: threading.Event, mqtt_url: str, database_url: str, base_url: str, token: str
) -> None:
    """Play the shipped incident scenarios now and then, so the board has something to show."""
    shipped = shipped_scenarios()
    scenarios = [load_scenario(shipped[name]) for name in DEMO_INCIDENTS]

    def register(bound: BoundScenario) -> None:
        register_scenario(database_url, bound)

    def retire(bound: BoundScenario) -> None:
        retire_scenario(database_url, bound)

    stop.wait(INCIDENTS_FIRST_S)
    while not stop.is_set():
        try:
            run_scenarios(
                scenarios,
                mqtt_url=mqtt_url,
                alerts=ApiAlerts(base_url=base_url, token=token),
                register=register,
                retire=retire,
                prefix="demo",
            )
        except Exception:  # noqa: BLE001 - the thread's boundary: the demo goes on without them
            _LOG.exception("the demo's incidents failed")
        stop.wait(INCIDENTS_EVERY_S)


def _start(name: str, target: Callable[..., object], *args: Any, **kwargs: Any) -> threading.Thread:
    """``target(*args, **kwargs)`` on a daemon thread named ``name``, started."""
    thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=name, daemon=True)
    thread.start()
    return thread


def run_demo(args: argparse.Namespace, base: Settings) -> int:
    """The demo, from the settings the entry point built (``base``)."""
    data_dir = base.data_dir.resolve()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _LOG.info("%s: stopping the demo", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with ExitStack() as stack:
        database_url = base.database_url
        if database_url is None:
            postgres = stack.enter_context(EmbeddedPostgres(data_dir=data_dir / "postgres"))
            database_url = postgres.url
            _LOG.info("embedded PostgreSQL at %s (data in %s)", database_url, data_dir / "postgres")
        mqtt_url = base.mqtt_url
        if mqtt_url is None:
            broker = stack.enter_context(EmbeddedBroker(data_dir=data_dir / "broker"))
            mqtt_url = broker.url
            _LOG.info("embedded %s broker at %s", broker.kind, mqtt_url)
        # The demo's webhook receivers run on this machine (docs/security.md).
        alerts = base.alerts.model_copy(update={"webhook_private_destinations": True})
        settings = base.model_copy(
            update={"database_url": database_url, "mqtt_url": mqtt_url, "alerts": alerts}
        )

        schema.upgrade(database_url)
        devices = demo_devices(community_id=DEMO_COMMUNITY, count=args.devices, seed=DEMO_SEED)
        register_devices(database_url, DEMO_COMMUNITY, "Demo community", devices)
        ensure_demo_uitd(database_url, DEMO_COMMUNITY)
        with psycopg.connect(database_url) as conn:
            token = create_token(conn, f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}")

        pipeline_ready = threading.Event()
        pipeline = _start("pipeline", run_pipeline, settings, stop, ready=pipeline_ready)
        pipeline_ready.wait(30)

        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings),
                host="127.0.0.1",
                port=args.port,
                log_level="warning",
                # An open dashboard holds a stream: don't wait 15 s for it on Ctrl-C.
                timeout_graceful_shutdown=2,
            )
        )
        api = _start("api", server.run)

        simulator = Simulator(devices=devices, mqtt_url=mqtt_url, seed=DEMO_SEED, rate=args.rate)
        sim = _start("simulator", simulator.run)

        base_url = f"http://127.0.0.1:{args.port}"
        _start("incidents", _play_incidents, stop, mqtt_url, database_url, base_url, token)
        # A building fire panel through the GB/T 26875.3 bridge (docs/fire-bridge.md).
        panel = _start(
            "fire-panel",
            run_panel_demo,
            settings,
            stop,
            first_s=INCIDENTS_FIRST_S + 10,
            every_s=INCIDENTS_EVERY_S,
        )
        print(
            "\nSmartCommunity demo is running\n"
            f"  dashboard    {base_url}/#token={token}\n"
            f"  API docs     {base_url}/docs\n"
            f"  health       {base_url}/health\n"
            f"  broker       {mqtt_url}\n"
            f"  database     {database_url}\n"
            f"  API token    {token}\n"
            f"  try          curl -H 'Authorization: Bearer {token}' "
            f"{base_url}/api/v1/devices?limit=5\n"
            f"  devices      {len(devices)} simulated in community {DEMO_COMMUNITY}, "
            f"{args.rate:g} msgs/s\n"
            f"  incidents    {', '.join(DEMO_INCIDENTS)} played {INCIDENTS_FIRST_S:.0f} s "
            f"from now, then every {INCIDENTS_EVERY_S / 60:.0f} min\n"
            f"  fire panel   UITD {DEMO_UITD} (GB/T 26875.3): a panel fire alarm "
            f"{INCIDENTS_FIRST_S + 10:.0f} s from now, then every "
            f"{INCIDENTS_EVERY_S / 60:.0f} min\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                stop.set()
            if not pipeline.is_alive():
                _LOG.error("the pipeline stopped; ending the demo")
                stop.set()
            stop.wait(0.5)

        simulator.stop()
        sim.join(15)
        panel.join(15)
        server.should_exit = True
        api.join(15)
        pipeline.join(30)
    print("demo stopped", flush=True)
    return 0
