"""``smartcommunity`` command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from pydantic import ValidationError

from core.errors import ConfigurationError, SmartCommunityError
from core.settings import Settings
from smartcommunity.cli_support import settings as _settings
from smartcommunity.cli_support import use_settings
from smartcommunity.commands import command_group, register_all, subcommand

__all__ = ["main"]

_LOG = logging.getLogger("smartcommunity")


def _require_db(settings: Settings) -> str:
    if settings.database_url is None:
        raise ConfigurationError("SC_DATABASE_URL is not set")
    return settings.database_url


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        _LOG.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from store import schema

    applied = schema.upgrade(_require_db(_settings()))
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        print("database schema is up to date")
    return 0


def _run_until_signalled(run: Callable[[Settings, threading.Event], None]) -> int:
    """Run a pipeline until SIGINT/SIGTERM; a failed pipeline exits non-zero, so that
    systemd (or any supervisor) restarts us."""
    from gateway.supervisor import EXIT_THREAD_FAILED, PipelineFailed

    stop = threading.Event()
    _stop_on_signals(stop)
    try:
        run(_settings(), stop)
    except PipelineFailed as exc:
        _LOG.critical("exiting: %s", exc)
        return EXIT_THREAD_FAILED
    return 0


def cmd_run(_args: argparse.Namespace) -> int:
    from gateway.process import run_pipeline, tune_gc, tune_threads

    tune_gc()  # the process is the pipeline's alone
    tune_threads()
    return _run_until_signalled(lambda settings, stop: run_pipeline(settings, stop, hard_exit=True))


def cmd_worker(_args: argparse.Namespace) -> int:
    from gateway.cluster import run_cluster_worker

    return _run_until_signalled(
        lambda settings, stop: run_cluster_worker(settings, stop, hard_exit=True)
    )


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    settings = _settings()
    _require_db(settings)
    uvicorn.run(
        create_app(settings),
        host=args.host or settings.api.host,
        port=args.port or settings.api.port,
        log_level=settings.log_level.lower(),
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from smartcommunity.demo import run_demo

    return run_demo(args, _settings())


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.cli import main_from_args

    return main_from_args(args, _settings())


def cmd_week(args: argparse.Namespace) -> int:
    from smartcommunity.week import run_week

    if args.devices < 1 or args.days <= 0 or args.operators < 1:
        print("--devices, --days and --operators must be positive", file=sys.stderr)
        return 2
    report = run_week(
        devices=args.devices,
        days=args.days,
        seed=args.seed,
        operators=args.operators,
        on_day=lambda day: print(f"day {day} done", file=sys.stderr, flush=True),
    )
    print(report.render())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smartcommunity", description="Community safety and care device platform."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    db = command_group(sub, "db", help="database schema and storage")
    subcommand(db, "upgrade", cmd_db_upgrade, help="apply pending migrations")

    subcommand(
        sub, "run", cmd_run, help="run gateway + ingest against SC_MQTT_URL / SC_DATABASE_URL"
    )

    subcommand(
        sub,
        "worker",
        cmd_worker,
        help="a clustered pipeline worker: community shards of SC_CLUSTER__AMQP_URLS",
    )

    api = subcommand(sub, "api", cmd_api, help="serve the HTTP API")
    api.add_argument("--host")
    api.add_argument("--port", type=int)

    demo = subcommand(
        sub, "demo", cmd_demo, help="embedded broker + PostgreSQL, pipeline, API, simulator"
    )
    demo.add_argument("--devices", type=int, default=40)
    demo.add_argument("--rate", type=float, default=20.0, help="messages per second")
    demo.add_argument("--port", type=int, default=8000, help="API port")
    demo.add_argument("--duration", type=float, default=0, help="stop after N s (0 = Ctrl-C)")

    simulate = subcommand(
        sub, "simulate", cmd_simulate, help="publish simulated devices to a broker"
    )
    try:
        from simulators.cli import add_arguments
    except ImportError:  # pragma: no cover - simulators are part of the distribution
        pass
    else:
        add_arguments(simulate)

    week = subcommand(
        sub,
        "week",
        cmd_week,
        help="a simulated week in minutes: routine, scripted incidents, and the alarm report",
    )
    week.add_argument("--devices", type=int, default=2000, help="about this many (default 2000)")
    week.add_argument("--days", type=float, default=7.0, help="virtual days (default 7)")
    week.add_argument("--seed", type=int, default=1)
    week.add_argument("--operators", type=int, default=1, help="operators sharing the alarms")
    register_all(sub, db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        # The one place the environment is read: every command gets these settings.
        use_settings(Settings())
    except ValidationError as exc:
        print(f"smartcommunity: configuration: {exc}", file=sys.stderr)
        return 2
    try:
        return func(args)
    except SmartCommunityError as exc:
        print(f"smartcommunity: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
