"""What the registry's sub-commands share: a database connection that names its actor,
credentials files, and small tables on stdout."""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from core.errors import ConfigurationError
from core.settings import Settings
from store import schema, sessions

__all__ = [
    "aware_time",
    "cli_actor",
    "connect",
    "database_url",
    "keywords",
    "print_table",
    "settings",
    "use_settings",
    "write_credentials",
]

# Credentials files hold passwords: readable by their owner only.
SECRET_FILE_MODE = 0o600


# The process's one Settings, built by the entry point (smartcommunity.cli.main) from
# the environment and handed here, so that no command reads the environment itself.
_PROCESS: list[Settings] = []


def use_settings(built: Settings) -> None:
    """The entry point hands over the settings it built for this process."""
    _PROCESS[:] = [built]


def settings() -> Settings:
    """This process's settings, as the entry point built them."""
    if not _PROCESS:
        raise ConfigurationError("no settings: commands run through smartcommunity.cli.main")
    return _PROCESS[0]


def database_url() -> str:
    url = settings().database_url
    if url is None:
        raise ConfigurationError("SC_DATABASE_URL is not set")
    schema.upgrade(url)
    return url


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry for the uid (containers)
        return f"cli:uid{os.getuid()}"


def connect() -> psycopg.Connection[Any]:
    """An autocommit connection whose changes the audit log attributes to this CLI user."""
    conn = psycopg.connect(database_url(), autocommit=True)
    sessions.set_actor(conn, cli_actor())
    return conn


def write_credentials(target: str, rows: Iterable[tuple[str, str]]) -> int:
    """``device_id,username,password`` CSV (what ``smartcommunity simulate --credentials``
    reads) to a new file only its owner can read, or to stdout for ``-``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("device_id", "username", "password"))
    count = 0
    for device_id, password in rows:
        writer.writerow((device_id, device_id, password))
        count += 1
    if target == "-":
        sys.stdout.write(buffer.getvalue())
        return count
    path = Path(target)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())
    os.chmod(path, SECRET_FILE_MODE)
    return count


def keywords(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The values of the options ``names`` as keyword arguments, for a call whose
    parameters the options are named (``dest``) after."""
    return {name: getattr(args, name) for name in names}


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in text:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def aware_time(text: str, *, hint: str = ", e.g. 2026-12-01T00:00+08:00") -> datetime:
    """An ISO 8601 time that names its zone (an argparse ``type``); ``hint`` ends the
    message that refuses one without."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time zone{hint}")
    return value
