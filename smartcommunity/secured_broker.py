"""A Mosquitto that lets in only what ``smartcommunity broker export`` wrote.

The shipped configuration (``smartcommunity/mosquitto.conf``: persistence, queue
limits) with anonymous access off and the exported password_file and acl_file
on. For the tests and for an installer trying the whole path on a laptop; a
production broker uses deploy/mosquitto/mosquitto.conf with the same two lines.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import IO

from smartcommunity.embedded.broker import MOSQUITTO_CANDIDATES, mosquitto_config
from smartcommunity.embedded.process import EmbeddedServerError, ServerProcess, free_port, spawn

__all__ = ["ExportedMosquitto", "SecuredMosquitto"]


class _Mosquitto(ServerProcess):
    """Mosquitto on 127.0.0.1, run with the configuration ``_prepare`` writes to
    ``config_path``."""

    def __init__(self, *, data_dir: Path, port: int | None) -> None:
        super().__init__(data_dir=data_dir, port=port)
        found = next((p for p in MOSQUITTO_CANDIDATES if os.access(p, os.X_OK)), None)
        if found is None:
            raise EmbeddedServerError(self.name, "no mosquitto in /usr/sbin or /usr/local/sbin")
        self._binary = found

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "mosquitto.conf"

    def _spawn(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return spawn([self._binary, "-c", str(self.config_path)], log, cwd=self.data_dir)


class SecuredMosquitto(_Mosquitto):
    """Mosquitto on 127.0.0.1 with the exported files; ``reload()`` re-reads them."""

    name = "secured-broker"

    def __init__(
        self, *, data_dir: Path, password_file: Path, acl_file: Path, port: int | None = None
    ) -> None:
        super().__init__(data_dir=data_dir, port=port)
        # Devices connect here (client id bound to user name); services to ``port``.
        self.device_port = free_port()
        self.password_file = password_file
        self.acl_file = acl_file

    def url_for(self, username: str, password: str) -> str:
        return f"mqtt://{username}:{password}@127.0.0.1:{self.port}"

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads password_file and acl_file."""
        if self.pid is None or not self.running:
            raise EmbeddedServerError(self.name, "not running")
        os.kill(self.pid, signal.SIGHUP)

    def config(self) -> str:
        """The shipped configuration, closed to anonymous clients, with a second listener
        for devices where a client's id is its user name, so no device can take another's
        (and disconnect it). The services' listener stays unbound here: the tests' control
        for a takeover. What ``broker export`` writes, and deploy/mosquitto/mosquitto.conf,
        bind both (``ExportedMosquitto`` runs the former)."""
        config = mosquitto_config(port=self.port, data_dir=self.data_dir)
        if "allow_anonymous true" not in config:
            raise EmbeddedServerError(
                "broker", "shipped mosquitto.conf changed: no allow_anonymous"
            )
        config = config.replace("allow_anonymous true", "allow_anonymous false")
        return config + (
            "\n# Added by smartcommunity.secured_broker: the registry's users, their topics only.\n"
            f"password_file {self.password_file.absolute()}\n"
            f"acl_file {self.acl_file.absolute()}\n"
            "\n# Devices: the client id is the user name"
            " (listener options follow their listener).\n"
            f"listener {self.device_port} 127.0.0.1\n"
            "use_username_as_clientid true\n"
        )

    def _prepare(self) -> None:
        self.config_path.write_text(self.config(), encoding="utf-8")


class ExportedMosquitto(_Mosquitto):
    """Mosquitto running the listener file ``broker export`` wrote, as it is: its
    listeners, its users and ACLs, its client-id binding (no listener of its own).
    ``port`` is the pipeline listener's, which tells when the broker is up."""

    name = "exported-broker"

    def __init__(self, *, data_dir: Path, conf_dir: Path, port: int) -> None:
        super().__init__(data_dir=data_dir, port=port)
        self.conf_dir = conf_dir

    def _prepare(self) -> None:
        lines = [
            "# smartcommunity.secured_broker.ExportedMosquitto: the exported listeners only.",
            "persistence false",
            "log_dest stderr",
            "log_type all",
            f"include_dir {self.conf_dir.absolute()}",
        ]
        if os.geteuid() == 0:  # as mosquitto_config: root would switch to "mosquitto"
            lines.append("user root")
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
