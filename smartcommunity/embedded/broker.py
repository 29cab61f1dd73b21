"""Mosquitto with the shipped configuration, or amqtt where Mosquitto is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Literal

import psutil

from smartcommunity.embedded.process import (
    EmbeddedServerError,
    ServerProcess,
    logger,
    spawn,
    stop_leftover,
)

BrokerKind = Literal["mosquitto", "amqtt"]

# Debian installs the broker outside a normal user's PATH.
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
MOSQUITTO_TEMPLATE = Path(__file__).parent.parent / "mosquitto.conf"


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


class EmbeddedBroker(ServerProcess):
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
                    stop_leftover(proc, self.stop_signal, "Mosquitto")
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
            return spawn([self._mosquitto, "-c", str(self.config_path)], log, cwd=self.data_dir)
        command = [sys.executable, "-m", "smartcommunity.amqtt_broker", "--port", str(self.port)]
        # The child imports this very package, installed or not.
        source_root = str(Path(__file__).resolve().parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [source_root, os.environ.get("PYTHONPATH")])
            ),
        }
        return spawn(command, log, cwd=self.data_dir, env=env)
