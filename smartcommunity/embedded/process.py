"""The child-process machinery both embedded servers share."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypedDict, Unpack

import psutil

from core.errors import SmartCommunityError

logger = logging.getLogger(__name__)


# initdb plus crash recovery after a SIGKILL on a slow CI disk stay well below
# this; a server not up by then is broken, not slow.
START_TIMEOUT_S = 60.0
# A graceful stop of either server takes well under a second; past this the
# process group is killed so that nothing outlives stop().
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05
# Ports tried when the one we picked is taken before the server binds it.
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 40


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


def port_is_free(port: int, *, reuse_addr: bool = True) -> bool:
    """Whether a listener could bind ``port`` on 127.0.0.1 now. With ``reuse_addr``, as
    the servers bind it: connections of a previous run in TIME_WAIT do not make the
    port busy, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_addr:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def accepts_connections(port: int, *, timeout_s: float = 0.5) -> bool:
    """Whether something listens on ``port`` on 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


class SpawnOptions(TypedDict, total=False):
    """Popen options in which the servers' processes differ: the environment (when not
    this process's) and the user they run as (when not this process's)."""

    env: dict[str, str]
    user: int
    group: int
    extra_groups: list[int]


def spawn(
    command: list[str], log: IO[bytes], *, cwd: Path, **options: Unpack[SpawnOptions]
) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own (which stop and kill reach whole),
    its output going to ``log``."""
    return subprocess.Popen(  # noqa: S603 - fixed command, no shell
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **options,
    )


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


def stop_leftover(proc: psutil.Process, signum: signal.Signals, what: str) -> None:
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


class ServerProcess(ABC):
    """A server child process in a process group of its own, logging to a file."""

    name = "server"
    # The signal that asks the server to finish its work and exit.
    stop_signal = signal.SIGTERM

    def __init__(self, *, data_dir: Path, port: int | None) -> None:
        self.data_dir = data_dir.absolute()
        # Chosen now so that url is known before start and kept by restart().
        self.port = port if port is not None else free_port()
        # A port we picked may be taken by another process before the server binds it;
        # until the server first runs, such a port is replaced (see start).
        self._movable = port is None
        self._proc: subprocess.Popen[bytes] | None = None
        # True once the latest process and its whole group are gone.
        self._stopped = True
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    @abstractmethod
    def url(self) -> str: ...

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
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # First: it stops a server an earlier run left on this data dir (and port).
            # Again after a move: a config may name the port.
            self._prepare()
            if not port_is_free(self.port):
                if self._move_port(attempt):
                    continue
                raise EmbeddedServerError(
                    self.name, f"port {self.port} on 127.0.0.1 is already in use"
                )
            if self._start_once(may_move=self._movable and attempt < PORT_ATTEMPTS):
                self._movable = False
                logger.info("%s ready at %s", self.name, self.url)
                return self.url
            self._move_port(attempt)
        raise AssertionError("unreachable: the last attempt raises or returns")

    def _move_port(self, attempt: int) -> bool:
        """Take another free port, if this one was ours to pick; False if it was not."""
        if not self._movable or attempt >= PORT_ATTEMPTS:
            return False
        taken, self.port = self.port, free_port()
        logger.warning("%s: port %d was taken meanwhile; using %d", self.name, taken, self.port)
        return True

    def _start_once(self, *, may_move: bool) -> bool:
        """Spawn the server and wait until it accepts connections. False: it exited while
        another process held its port, and ``may_move`` allows another port."""
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
                if status is not None and may_move and not port_is_free(self.port):
                    return False  # another process bound the port first
                detail = (
                    f"exited with status {status}"
                    if status is not None
                    else f"not accepting connections after {START_TIMEOUT_S:.0f} s"
                )
                raise EmbeddedServerError(self.name, detail, self.log_tail())
            time.sleep(POLL_INTERVAL_S)
        return True

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

    @abstractmethod
    def _prepare(self) -> None:
        """Make data_dir ready before the server process starts."""

    @abstractmethod
    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]: ...

    def _ready(self) -> bool:
        return accepts_connections(self.port)

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
