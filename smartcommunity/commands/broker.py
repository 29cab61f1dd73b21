"""``smartcommunity broker ...``: Mosquitto's password_file and acl_file from the registry.

    smartcommunity broker account add sc-pipeline --role pipeline   # prints its password once
    smartcommunity broker export --dir /etc/mosquitto/smartcommunity \
        --reload-pidfile /run/mosquitto/mosquitto.pid

With ``--dir`` it also writes ``conf.d/listeners.conf`` there: the listeners (the
pipeline's on loopback, the devices' with TLS), anonymous access off, the two files,
and every client's id bound to its user name. Mosquitto's configuration then needs
only ``include_dir /etc/mosquitto/smartcommunity/conf.d`` (and no listener of its own).
A pipeline account ``N`` gets a companion ``N-alerts`` (same password) for the
pipeline's alert publisher: run the pipeline with ``SC_GATEWAY__BOUND_CLIENT_IDS=true``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.broker_acl import Listener, ServiceRole, foreign_topics
from core.errors import ConfigurationError
from core.passwords import CHOSEN_ITERATIONS, hash_password, new_secret
from gateway.decoders import load_profiles
from smartcommunity.broker_export import (
    TLS_DIR,
    ListenerPlan,
    MqttAccountError,
    add_account,
    export_broker_files,
    list_accounts,
    reload_mosquitto,
    remove_account,
)
from smartcommunity.cli_support import connect, print_table
from smartcommunity.cli_support import settings as cli_settings
from smartcommunity.commands import SubParsers, command_group, subcommand

__all__ = ["ACL_FILE", "LISTENER_FILE", "PASSWORD_FILE", "register"]

PASSWORD_FILE = "passwd"  # noqa: S105 a file name, not a password
ACL_FILE = "acl"
LISTENER_FILE = "conf.d/listeners.conf"


def _fail(message: str) -> int:
    print(f"smartcommunity broker: {message}", file=sys.stderr)
    return 1


def _pid(args: argparse.Namespace) -> int | None:
    if args.reload_pid is not None:
        return int(args.reload_pid)
    if args.reload_pidfile is not None:
        try:
            return int(Path(args.reload_pidfile).read_text(encoding="utf-8").strip())
        except (OSError, ValueError) as exc:
            raise MqttAccountError(f"{args.reload_pidfile}: no pid in it ({exc})") from None
    return None


def _export(args: argparse.Namespace) -> int:
    if args.dir is None and (args.password_file is None or args.acl_file is None):
        return _fail("give --dir, or both --password-file and --acl-file")
    password_file = args.password_file or args.dir / PASSWORD_FILE
    acl_file = args.acl_file or args.dir / ACL_FILE
    listener_file = args.listener_file or (args.dir / LISTENER_FILE if args.dir else None)
    try:
        pid = _pid(args)
        profiles = args.profiles or cli_settings().decoders.profiles
        decoders = load_profiles(profiles) if profiles else None
        foreign = (
            foreign_topics(decoders.products.values(), decoders.profiles) if decoders else None
        )
        listeners = None
        if listener_file is not None:
            listeners = ListenerPlan(
                listener_file,
                pipeline=Listener.parse(args.pipeline_listener),
                devices=Listener.parse(args.device_listener),
                tls_dir=None if args.no_tls else args.tls_dir,
            )
        with connect() as conn:
            summary = export_broker_files(
                conn, password_file, acl_file, foreign=foreign, listeners=listeners
            )
        if pid is not None:
            reload_mosquitto(pid)
    except (MqttAccountError, ConfigurationError, ValueError) as exc:
        return _fail(str(exc))
    print(
        f"wrote {summary.password_file} and {summary.acl_file}: {summary.devices} devices, "
        f"{summary.accounts} service accounts"
    )
    if summary.listener_file is not None:
        print(f"  and {summary.listener_file}: client ids bound to user names on both listeners")
    left_out = [
        (summary.skipped_decommissioned, "decommissioned"),
        (
            summary.skipped_no_credentials,
            "without credentials (registered before the registry "
            "issued them: `smartcommunity devices rotate ID`)",
        ),
        (len(summary.skipped_bad_username), "with ids Mosquitto cannot take as user names"),
    ]
    for count, why in left_out:
        if count:
            print(f"  left out {count} devices {why}")
    if summary.accounts == 0:
        print(
            "  no service account: the pipeline cannot log in "
            "(`smartcommunity broker account add NAME --role pipeline`)",
            file=sys.stderr,
        )
    print(
        f"  reloaded Mosquitto (pid {pid})"
        if pid is not None
        else "  Mosquitto reads them at its next start or SIGHUP (--reload-pid)"
    )
    return 0


def _add(args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 12:
            return _fail("a chosen password needs at least 12 characters")
        hashed = hash_password(password, iterations=CHOSEN_ITERATIONS)
    else:
        password = new_secret()
        hashed = hash_password(password)
    try:
        with connect() as conn:
            add_account(conn, args.name, ServiceRole(args.role), hashed)
    except MqttAccountError as exc:
        return _fail(str(exc))
    if not args.password_stdin:
        print(password)
        print(
            f"# {args.name}'s password, shown once. Use it in SC_MQTT_URL "
            f"(mqtt://{args.name}:PASSWORD@host:1883); the broker takes it at the next export.",
            file=sys.stderr,
        )
    return 0


def _list(_args: argparse.Namespace) -> int:
    with connect() as conn:
        rows = list_accounts(conn)
    print_table(
        ("username", "role", "created", "rotated"),
        ((u, r, f"{c:%Y-%m-%d %H:%M}", f"{t:%Y-%m-%d %H:%M}" if t else "") for u, r, c, t in rows),
    )
    return 0


def _remove(args: argparse.Namespace) -> int:
    with connect() as conn:
        if not remove_account(conn, args.name):
            return _fail(f"no service account {args.name!r}")
    print(f"removed {args.name}; the broker refuses it after the next export")
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "broker", help="Mosquitto credentials and ACLs from the registry")

    export = subcommand(
        sub, "export", _export, help="write password_file and acl_file; reload Mosquitto"
    )
    export.add_argument("--dir", type=Path, help=f"write {PASSWORD_FILE} and {ACL_FILE} here")
    export.add_argument("--password-file", type=Path)
    export.add_argument("--acl-file", type=Path)
    export.add_argument(
        "--profiles",
        type=Path,
        metavar="PATH",
        help="decoder profiles whose topics devices get (default: SC_DECODERS__PROFILES)",
    )
    export.add_argument(
        "--listener-file", type=Path, help=f"listeners' conf (default with --dir: {LISTENER_FILE})"
    )
    export.add_argument(
        "--pipeline-listener",
        default="127.0.0.1:1883",
        metavar="[HOST:]PORT",
        help="the pipeline's and services' listener (default 127.0.0.1:1883)",
    )
    export.add_argument(
        "--device-listener",
        default="8883",
        metavar="[HOST:]PORT",
        help="the devices' listener (default 8883, every interface)",
    )
    tls = export.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls-dir",
        type=Path,
        default=TLS_DIR,
        help=f"ca.crt, server.crt and server.key for the devices' listener (default {TLS_DIR})",
    )
    tls.add_argument(
        "--no-tls", action="store_true", help="devices' listener without TLS: closed networks only"
    )
    reload = export.add_mutually_exclusive_group()
    reload.add_argument("--reload-pid", type=int, metavar="PID", help="SIGHUP this Mosquitto")
    reload.add_argument("--reload-pidfile", type=Path, metavar="FILE", help="...or the pid in FILE")

    asub = command_group(sub, "account", help="service accounts: the pipeline, the API")
    add = subcommand(
        asub, "add", _add, "name", help="create (or re-key) an account; prints its password once"
    )
    roles = [r.value for r in ServiceRole if r is not ServiceRole.ALERTS]  # alerts: a companion
    add.add_argument("--role", choices=roles, required=True)
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password instead of generating one"
    )
    subcommand(asub, "list", _list, help="service accounts")
    subcommand(asub, "remove", _remove, "name", help="remove an account")
