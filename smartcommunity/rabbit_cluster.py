"""A RabbitMQ cluster of private nodes on loopback, for tests, benchmarks and a try.

Each node has its own folder (``HOME`` with its Erlang cookie, Mnesia, logs),
node name and ports, and all of them use a private epmd port bound to
127.0.0.1, so nothing here touches a RabbitMQ or epmd the machine already runs.
Debian's ``rabbitmq-server`` (3.10, with the MQTT plugin) is what it drives.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigurationError, ServiceUnavailable
from smartcommunity.embedded.process import accepts_connections, free_port, port_is_free

__all__ = ["RabbitCluster", "RabbitNode", "find_rabbitmq", "free_port"]

# A node boots in 5-15 s on a loaded 2-core machine; far above that is a failure.
BOOT_TIMEOUT_S = 120.0
# How long a probe of a node's (or epmd's) port may wait for the connection.
PROBE_TIMEOUT_S = 1.0
# Erlang distribution (node to node) on loopback only.
_LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"
PLUGINS = "rabbitmq_mqtt,rabbitmq_consistent_hash_exchange"
# The scripts themselves, not Debian's /usr/sbin wrappers: those switch to the
# rabbitmq user, who cannot read our folders, and send the output to /var/log.
_BIN = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin")


def find_rabbitmq() -> tuple[str, str]:
    """Paths of ``rabbitmq-server`` and ``rabbitmqctl``; a clear error when missing."""
    found = []
    for name in ("rabbitmq-server", "rabbitmqctl"):
        path = next((f"{d}/{name}" for d in _BIN if os.access(f"{d}/{name}", os.X_OK)), None)
        if path is None:
            raise ConfigurationError(
                f"{name} is not installed: the cluster needs Debian's rabbitmq-server"
                " (apt-get install rabbitmq-server; `make test-cluster` does it as root)"
            )
        found.append(path)
    return found[0], found[1]


@dataclass
class RabbitNode:
    name: str  # the Erlang node name, name@localhost
    folder: Path
    amqp_port: int
    mqtt_port: int
    dist_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://guest:guest@127.0.0.1:{self.mqtt_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class RabbitCluster:
    """``size`` nodes, clustered; ``start()`` returns when all of them run the cluster."""

    root: Path
    size: int = 3
    nodes: list[RabbitNode] = field(default_factory=list)
    epmd_port: int = 0
    _epmd: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.server, self.ctl = find_rabbitmq()
        self.epmd_port = self.epmd_port or free_port()
        tag = secrets.token_hex(4)
        cookie = secrets.token_hex(16).upper()
        names = [f"sc{tag}n{i}@localhost" for i in range(self.size)]
        for i, name in enumerate(names):
            folder = self.root / f"node{i}"
            (folder / "home").mkdir(parents=True, exist_ok=True)
            cookie_file = folder / "home" / ".erlang.cookie"
            cookie_file.write_text(cookie)
            cookie_file.chmod(0o400)
            amqp, mqtt, dist = free_port(), free_port(), free_port()
            config = folder / "rabbitmq.conf"
            peers = "\n".join(
                f"cluster_formation.classic_config.nodes.{j + 1} = {peer}"
                for j, peer in enumerate(names)
            )
            config.write_text(
                f"listeners.tcp.default = 127.0.0.1:{amqp}\n"
                f"mqtt.listeners.tcp.default = 127.0.0.1:{mqtt}\n"
                "mqtt.durable_queue_type = quorum\n"
                "mqtt.allow_anonymous = false\n"
                "loopback_users = none\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                f"{peers}\n"
                # Loopback nodes see each other die at once; no partition handling needed
                # beyond the default, but a dead peer must be noticed within seconds.
                "net_ticktime = 10\n"
                "log.console = false\n"
                "log.file.level = info\n"
            )
            env = {
                **os.environ,
                "HOME": str(folder / "home"),
                "RABBITMQ_NODENAME": name,
                "RABBITMQ_USE_LONGNAME": "false",
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(amqp),
                "RABBITMQ_DIST_PORT": str(dist),
                "RABBITMQ_CONFIG_FILE": str(config),
                "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
                "RABBITMQ_LOG_BASE": str(folder / "log"),
                "RABBITMQ_PID_FILE": str(folder / "rabbit.pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
                "ERL_CRASH_DUMP": str(folder / "erl_crash.dump"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
                "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": _LOOPBACK_DIST,
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "ERL_EPMD_PORT": str(self.epmd_port),
            }
            (folder / "enabled_plugins").write_text(f"[{PLUGINS}].\n")
            (folder / "advanced.config").write_text("[].\n")
            (folder / "rabbitmq-env.conf").write_text("")
            self.nodes.append(RabbitNode(name, folder, amqp, mqtt, dist, env))

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> RabbitCluster:
        # Our own epmd as a child, so that stop() can end it (a daemonised one outlives us).
        epmd = shutil.which("epmd") or "/usr/bin/epmd"
        self._epmd = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.nodes[0].env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while (
            not accepts_connections(self.epmd_port, timeout_s=PROBE_TIMEOUT_S)
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        for node in self.nodes:
            self.start_node(node, wait=False)
        for node in self.nodes:
            self.wait_node(node)
        self.wait_clustered()
        return self

    def start_node(self, node: RabbitNode, *, wait: bool = True) -> None:
        if not port_is_free(node.dist_port, reuse_addr=False):
            # While a killed node was down, another process's connection may have taken its
            # distribution port (an ephemeral port): peers find a node's port through epmd,
            # so a restarted node may take another one.
            node.dist_port = free_port()
            node.env["RABBITMQ_DIST_PORT"] = str(node.dist_port)
        log = (node.folder / "server.out").open("ab")
        node.process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            [self.server],
            env=node.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # SIGKILL of the node's group takes its Erlang VM along
        )
        log.close()
        if wait:
            self.wait_node(node)

    def wait_node(self, node: RabbitNode, timeout: float = BOOT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not node.alive:
                raise ServiceUnavailable("rabbitmq", f"{node.name} exited: {self.tail(node)}")
            ports = (node.amqp_port, node.mqtt_port)
            if all(accepts_connections(port, timeout_s=PROBE_TIMEOUT_S) for port in ports):
                return
            time.sleep(0.5)
        raise ServiceUnavailable("rabbitmq", f"{node.name} did not start: {self.tail(node)}")

    def wait_clustered(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        """Until the first node counts every node as running."""
        deadline = time.monotonic() + timeout
        names = {n.name for n in self.nodes if n.alive}
        out = ""
        while time.monotonic() < deadline:
            out = self.ctl_run(self.nodes[0], "cluster_status", "--formatter", "json")
            if all(name in out.split('"running_nodes":', 1)[-1].split("]", 1)[0] for name in names):
                return
            time.sleep(1)
        raise ServiceUnavailable("rabbitmq", f"cluster did not form: {out[-500:]}")

    def ctl_run(self, node: RabbitNode, *args: str) -> str:
        done = subprocess.run(  # noqa: S603 - our own binary and arguments
            [self.ctl, "-n", node.name, *args],
            env=node.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL: the node dies as a crashed machine would, with no goodbye."""
        if node.process is not None and node.process.poll() is None:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(30)

    def stop(self) -> None:
        for node in self.nodes:
            self.kill(node)
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.kill()
            self._epmd.wait(10)

    def tail(self, node: RabbitNode, size: int = 1500) -> str:
        path = node.folder / "server.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return text[-size:]

    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def alive_nodes(self) -> Sequence[RabbitNode]:
        return [n for n in self.nodes if n.alive]
