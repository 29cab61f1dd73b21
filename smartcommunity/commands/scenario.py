"""``smartcommunity scenario list|show|run``: scripted incidents against a running platform.

``run`` needs the platform's broker (SC_MQTT_URL), its database to register the
scenario's devices in (SC_DATABASE_URL), and its API to read the alerts back
(``--api-url``, default the configured API address; ``--token`` or
SC_API_TOKEN, otherwise a token made for the run and revoked after it). Each
scenario plays in a community of its own; several run side by side. The exit
status is 0 only when every scenario passes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from core.errors import ConfigurationError, ServiceUnavailable
from simulators.checker import ApiAlerts
from simulators.registration import retire_scenario
from simulators.scenario import (
    BoundScenario,
    Scenario,
    ScenarioError,
    bind,
    load_scenario,
    shipped_scenarios,
)
from simulators.scenario_run import ScenarioResult, run_scenarios
from smartcommunity.cli_support import settings as cli_settings
from smartcommunity.commands import SubParsers, command_group
from smartcommunity.panels import bridge_for_runs, register_with_panels
from store import schema
from store.accounts import create_token, revoke_token_by_hash

__all__ = ["register"]

# A token made for a run lives at most this long, and is revoked when the run ends.
RUN_TOKEN_TTL = timedelta(hours=2)


def _load(names: list[str], files: list[Path], everything: bool) -> list[Scenario]:
    shipped = shipped_scenarios()
    if everything:
        names = list(shipped)
    scenarios = []
    for name in names:
        path = shipped.get(name) or shipped.get(name.replace("_", "-"))
        if path is None:
            raise ScenarioError(f"no scenario {name!r}; shipped: {', '.join(shipped)}")
        scenarios.append(load_scenario(path))
    scenarios += [load_scenario(path) for path in files]
    if not scenarios:
        raise ScenarioError("name a scenario, give --file, or --all")
    return scenarios


def _list(_args: argparse.Namespace) -> int:
    for name, path in shipped_scenarios().items():
        scenario = load_scenario(path)
        print(f"{name:<18} {scenario.title}")
    return 0


def _show(args: argparse.Namespace) -> int:
    (scenario,) = _load([args.name] if args.name else [], [args.file] if args.file else [], False)
    bound = bind(scenario, "show")
    print(f"{scenario.name}: {scenario.title}\n")
    print(scenario.description.strip() + "\n")
    community = bound.community
    print(
        f"community: {len(community.buildings)} {community.kind} buildings "
        f"(seed {scenario.community.seed}), {len(community.placed)} devices; playing:"
    )
    for placed in bound.cast:
        interval = bound.intervals[placed.device.id]
        product = bound.products.get(placed.device.id)
        speaks = f"  Alink {product.product_key}" if product else ""
        print(f"  {placed.local_id:<28} {placed.device.device_class:<9} every {interval} s{speaks}")
    for local, uitd in bound.uitds.items():
        print(
            f"  {local:<28} UITD in {uitd.building} (GB/T 26875.3 to the fire bridge),"
            f" points {local}-smoke1, {local}-smoke2, {local}-panel"
        )
    if scenario.history is not None:
        print(f"history: the past {scenario.history.span / 3600:g} h replayed first")
    print("timeline:")
    for step in scenario.timeline:
        target = step.device or f"building {step.building}"
        what = (
            step.event
            or ", ".join(f"{k}={v}" for k, v in step.set.items())
            or step.go
            or (f"incident {step.incident}" if step.incident else "")
        )
        print(f"  t+{step.at:g}s  {target:<26} {what}  {step.note}")
    for title, items in (("expect", scenario.expect), ("must not raise", scenario.forbid)):
        if items:
            print(f"{title}:")
        for e in items:
            after = f" of {e.after}" if e.after else ""
            print(
                f"  {e.rule:<28} {e.subject or '*':<36} {e.severity or 'any':<9}"
                + (f" within {e.within:g}s{after}" if title == "expect" else "")
            )
    if args.community:
        for placed in community.placed:
            print(f"  {placed.local_id:<28} {placed.device.device_class:<9} {placed.location}")
    return 0


@contextmanager
def _token(given: str | None, url: str) -> Iterator[str]:
    if given:
        yield given
        return
    with psycopg.connect(url) as conn:
        token = create_token(conn, "scenario run", datetime.now(UTC) + RUN_TOKEN_TTL)
    try:
        yield token
    finally:
        with psycopg.connect(url) as conn:
            revoke_token_by_hash(conn, token)


def _register(url: str, bound: BoundScenario) -> None:
    register_with_panels(url, bound)


def _run(args: argparse.Namespace) -> int:
    settings = cli_settings()
    mqtt_url = args.mqtt_url or settings.mqtt_url
    database_url = settings.database_url
    if mqtt_url is None or database_url is None:
        raise ConfigurationError(
            "scenario run needs SC_MQTT_URL (or --mqtt-url) and SC_DATABASE_URL"
        )
    api_url = args.api_url or f"http://{settings.api.host}:{settings.api.port}"
    scenarios = _load(args.names, args.file, args.all)
    schema.upgrade(database_url)

    def show(result: ScenarioResult) -> None:
        print(result.table + "\n", flush=True)

    print(f"playing {len(scenarios)} scenario(s) against {mqtt_url} and {api_url}", flush=True)
    configured = settings.api_token.get_secret_value() if settings.api_token else None
    with _token(args.token or configured, database_url) as token:
        results = run_scenarios(
            scenarios,
            mqtt_url=mqtt_url,
            alerts=ApiAlerts(base_url=api_url, token=token),
            register=lambda bound: _register(database_url, bound),
            retire=lambda bound: retire_scenario(database_url, bound),
            time_scale=args.time_scale,
            seed=args.seed,
            prefix=args.prefix,
            on_result=show,
            fire_bridge=args.fire_bridge,
            start_bridge=lambda: bridge_for_runs(
                settings.model_copy(update={"mqtt_url": mqtt_url}), args.prefix
            ),
        )
    failed = [
        r.bound.scenario.name + (" (broke off)" if r.error else "") for r in results if not r.passed
    ]
    print(
        f"{len(results) - len(failed)} of {len(results)} scenarios passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _guarded(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except ScenarioError as exc:
        print(f"scenario: {exc}", file=sys.stderr)
        return 2
    except (ServiceUnavailable, psycopg.OperationalError) as exc:
        print(f"scenario: {exc}", file=sys.stderr)
        return 1


def _time_scale(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(
        commands, "scenario", help="scripted incidents and the alerts they must raise"
    )
    sub.add_parser("list", help="the shipped scenarios").set_defaults(func=_guarded, handler=_list)

    show = sub.add_parser("show", help="a scenario's devices, timeline and expected alerts")
    show.add_argument("name", nargs="?")
    show.add_argument("--file", type=Path, help="a scenario file of your own")
    show.add_argument("--community", action="store_true", help="also list every device")
    show.set_defaults(func=_guarded, handler=_show)

    run = sub.add_parser("run", help="play scenarios against the running platform, print pass/fail")
    run.add_argument("names", nargs="*", metavar="NAME", help="shipped scenarios (see list)")
    run.add_argument("--all", action="store_true", help="every shipped scenario, side by side")
    run.add_argument(
        "--file", type=Path, action="append", default=[], help="a scenario file of your own"
    )
    run.add_argument(
        "--time-scale",
        type=_time_scale,
        default=1.0,
        metavar="X",
        help="play the timeline X times faster, up to each scenario's max_time_scale",
    )
    run.add_argument("--mqtt-url", help="default SC_MQTT_URL")
    run.add_argument("--api-url", help="default http://SC_API__HOST:SC_API__PORT")
    run.add_argument(
        "--token", help="API bearer token (default SC_API_TOKEN, else one for the run)"
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the device models")
    run.add_argument("--prefix", default="scn", help="community id prefix (default scn)")
    run.add_argument(
        "--fire-bridge",
        type=_host_port,
        metavar="HOST:PORT",
        help="a running fire bridge for the scenarios' UITDs (default: start one for the run)",
    )
    run.set_defaults(func=_guarded, handler=_run)


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("HOST:PORT, e.g. 127.0.0.1:9000")
    return host, int(port)
