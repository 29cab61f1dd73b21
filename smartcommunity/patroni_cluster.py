"""A Patroni-managed PostgreSQL cluster of private nodes on loopback, for tests and benchmarks.

One etcd and ``size`` PostgreSQL 15 nodes, each run by its own Patroni on
private ports, with every data dir under one scratch folder; the machine's own
PostgreSQL (5432, its config, its data) is never touched. ``synchronous_mode``
(strict) as in ``deploy/cluster/patroni/patroni.yml``: a commit returns once a
synchronous replica has it, so the primary can be killed without losing
anything a client saw committed. Debian's ``patroni`` and ``etcd-server`` are
what it drives.

Run as root, PostgreSQL refuses to start; Patroni and its servers then run as
``nobody``, which also keeps them away from any other cluster's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from core.errors import ConfigurationError, ServiceUnavailable
from smartcommunity.rabbit_cluster import free_port

__all__ = ["PatroniCluster", "PatroniNode", "find_patroni"]

# initdb, a base backup per replica and the first sync standby: seconds here,
# a minute on a loaded 2-core machine; far above that is a failure.
BOOT_TIMEOUT_S = 120.0
PG_BIN = Path("/usr/lib/postgresql/15/bin")
UNPRIVILEGED_USER = "nobody"
# Where Debian puts them.
SEARCH_PATH = "/usr/bin:/usr/local/bin"
# Patroni's environment: nothing of ours, since PATRONI_* variables would override
# the configuration it is given.
_CHILD_PATH = "/usr/bin:/bin:/usr/local/bin"
# Failure detection: the leader key lives TTL_S after the leader's last renewal,
# so a killed primary is replaced within about TTL_S + LOOP_WAIT_S. Patroni wants
# loop_wait + 2 * retry_timeout <= ttl; short here (loopback, tests), 30/10/10 in
# deploy/cluster/patroni/patroni.yml.
TTL_S = 12
LOOP_WAIT_S = 2
RETRY_TIMEOUT_S = 5


def find_patroni() -> tuple[str, str]:
    """Paths of ``patroni`` and ``etcd``; a clear error when one is missing."""
    found = []
    for name, package in (("patroni", "patroni"), ("etcd", "etcd-server")):
        path = shutil.which(name, path=SEARCH_PATH)
        if path is None:
            raise ConfigurationError(
                f"{name} is not installed: the database cluster needs Debian's {package}"
                " (apt-get install patroni etcd-server; `make test-cluster` does it as root)"
            )
        found.append(path)
    if not (PG_BIN / "postgres").exists():
        raise ConfigurationError(
            f"no PostgreSQL 15 server binaries in {PG_BIN} (Debian: postgresql-15)"
        )
    return found[0], found[1]


def _run_as() -> pwd.struct_passwd | None:
    return pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for directory, _dirs, files in os.walk(root):
        os.chown(directory, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(directory, name), user.pw_uid, user.pw_gid)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant, parents first (nothing gets to react)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=10)


@dataclass
class PatroniNode:
    name: str
    folder: Path
    pg_port: int
    api_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """This node alone (whatever its role)."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def postmaster_pid(self) -> int | None:
        """Patroni starts PostgreSQL in a session of its own: found by its pid file."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def status(self) -> dict[str, Any] | None:
        """Patroni's own view of its node (REST ``GET /patroni``), or None when down."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.api_port}/patroni", timeout=2
            ) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as exc:  # 503: running, but not a primary
            return dict(json.load(exc))
        except (OSError, ValueError):
            return None


@dataclass
class PatroniCluster:
    """etcd and ``size`` Patroni nodes; ``start()`` returns with a primary and a sync standby."""

    root: Path | None = None
    size: int = 3
    synchronous: bool = True
    nodes: list[PatroniNode] = field(default_factory=list)
    _etcd: subprocess.Popen[bytes] | None = None
    _owns_root: bool = False

    def __post_init__(self) -> None:
        self.patroni, self.etcd = find_patroni()
        self._user = _run_as()
        if self.root is None:
            # Not pytest's tmp_path: PostgreSQL, run as nobody, must traverse every parent.
            self.root = Path(tempfile.mkdtemp(prefix="sc-patroni-"))
            self._owns_root = True
        self.root.mkdir(parents=True, exist_ok=True)
        self.scope = f"sc{secrets.token_hex(4)}"
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        for i in range(self.size):
            node = PatroniNode(f"pg{i}", self.root / f"pg{i}", free_port(), free_port())
            node.folder.mkdir(exist_ok=True)
            # YAML is a superset of JSON: this is a valid patroni.yml.
            (node.folder / "patroni.yml").write_text(json.dumps(self._config(node), indent=1))
            self.nodes.append(node)

    def _config(self, node: PatroniNode) -> dict[str, Any]:
        loopback = ["host all all 127.0.0.1/32 trust", "host replication all 127.0.0.1/32 trust"]
        return {
            "scope": self.scope,
            "namespace": "/smartcommunity/",
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"127.0.0.1:{node.api_port}",
                "connect_address": f"127.0.0.1:{node.api_port}",
            },
            "etcd3": {"hosts": [f"127.0.0.1:{self.etcd_port}"]},
            "bootstrap": {
                "dcs": {
                    "ttl": TTL_S,
                    "loop_wait": LOOP_WAIT_S,
                    "retry_timeout": RETRY_TIMEOUT_S,
                    "synchronous_mode": self.synchronous,
                    "synchronous_mode_strict": self.synchronous,
                    "synchronous_node_count": 1,
                    "maximum_lag_on_failover": 1048576,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "parameters": {
                            "wal_level": "replica",
                            "hot_standby": "on",
                            "wal_log_hints": "on",
                            "max_wal_senders": 10,
                            "max_replication_slots": 10,
                            "max_connections": 200,
                        },
                    },
                },
                "initdb": [{"encoding": "UTF8"}, "no-locale"],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{node.pg_port}",
                "connect_address": f"127.0.0.1:{node.pg_port}",
                "data_dir": str(node.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.folder / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "replicator", "password": "loopback"},
                },
                "pg_hba": ["local all all trust", *loopback],
                "parameters": {
                    "unix_socket_directories": str(node.folder),
                    "shared_buffers": "32MB",
                    "fsync": "on",
                },
            },
            "tags": {"nofailover": False, "noloadbalance": False},
        }

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """libpq multi-host: whichever node is the writable primary, as clients should."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def start(self) -> PatroniCluster:
        assert self.root is not None
        if self._user is not None:
            _chown_tree(self.root, self._user)
        self._start_etcd()
        self.start_node(self.nodes[0])
        # The first node bootstraps the cluster; the others copy it once it leads.
        self.wait_for(lambda: self.leader() is self.nodes[0], "the first node leading")
        for node in self.nodes[1:]:
            self.start_node(node)
        self.wait_healthy()
        return self

    def _start_etcd(self) -> None:
        assert self.root is not None
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        log = (self.root / "etcd.log").open("ab")
        self._etcd = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [
                self.etcd,
                "--name=e0",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=e0={peer}",
                f"--initial-cluster-token={self.scope}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": _CHILD_PATH},  # ETCD_* variables would clash with the flags
        )
        log.close()

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=2) as r:  # noqa: S310
                    return bool(json.load(r).get("health") == "true")
            except (OSError, ValueError):
                return False

        self.wait_for(healthy, "etcd")

    def start_node(self, node: PatroniNode) -> None:
        log = (node.folder / "patroni.log").open("ab")
        user = self._user
        node.process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [self.patroni, str(node.folder / "patroni.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=node.folder,
            env={"HOME": str(node.folder), "PATH": _CHILD_PATH, "LC_ALL": "C.UTF-8"},
            start_new_session=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        log.close()

    def wait_for(self, predicate: Any, what: str, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self._etcd is not None and self._etcd.poll() is not None:
                raise ServiceUnavailable("etcd", f"exited: {self.tail_etcd()}")
            time.sleep(0.3)
        logs = "\n".join(f"--- {n.name}\n{self.tail(n)}" for n in self.nodes)
        raise ServiceUnavailable("patroni", f"timed out waiting for {what}\n{logs}")

    def wait_healthy(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        """Until a primary runs and, in synchronous mode, a live node is its sync standby."""

        def ready() -> bool:
            leader = self.leader()
            if leader is None:
                return False
            return not self.synchronous or self.sync_standby() is not None

        self.wait_for(ready, "a primary and a synchronous standby", timeout)

    def leader(self) -> PatroniNode | None:
        """The live node that runs as primary and holds the leader key."""
        for node in self.nodes:
            if not node.alive:
                continue
            status = node.status()
            # "master" up to Patroni 3.x (Debian 12 ships 3.0), "primary" in newer ones.
            role = status.get("role") if status else None
            if status and role in ("master", "primary") and status.get("state") == "running":
                return node
        return None

    def sync_standby(self) -> PatroniNode | None:
        """The live node the leader names as its synchronous standby (from ``GET /cluster``)."""
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{node.api_port}/cluster", timeout=2
                ) as response:
                    members = json.load(response).get("members", [])
            except (OSError, ValueError):
                continue
            names = {m["name"] for m in members if m.get("role") == "sync_standby"}
            found = [n for n in self.nodes if n.name in names and n.alive]
            return found[0] if found else None
        return None

    def kill(self, node: PatroniNode) -> None:
        """SIGKILL Patroni and its PostgreSQL, as a machine lost: no demotion, no goodbye."""
        postmaster = node.postmaster_pid()
        if node.process is not None and node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(30)
        if postmaster is not None:
            _kill_tree(postmaster)

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
        if self._etcd is not None and self._etcd.poll() is None:
            os.killpg(self._etcd.pid, signal.SIGKILL)
            self._etcd.wait(10)
        if self._owns_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def tail(self, node: PatroniNode, size: int = 1500) -> str:
        path = node.folder / "patroni.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def tail_etcd(self, size: int = 1500) -> str:
        assert self.root is not None
        path = self.root / "etcd.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""

    def postgres_pids(self) -> list[int]:
        """Every live PostgreSQL process of the cluster (postmasters and backends)."""
        pids: list[int] = []
        for node in self.nodes:
            pid = node.postmaster_pid()
            if pid is None:
                continue
            try:
                root = psutil.Process(pid)
                pids += [root.pid, *(c.pid for c in root.children(recursive=True))]
            except psutil.NoSuchProcess:
                continue
        return pids

    def __enter__(self) -> PatroniCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()
