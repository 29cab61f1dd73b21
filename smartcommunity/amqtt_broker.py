"""Runs the amqtt broker in its own process, for machines without Mosquitto.

``python -m smartcommunity.amqtt_broker --port 1883`` serves MQTT 3.1.1 on
127.0.0.1 until SIGTERM or SIGINT, then shuts down cleanly. It is started by
``smartcommunity.embedded.EmbeddedBroker``; a child process keeps amqtt's
event loop and threads out of the caller's process and lets tests kill it.

amqtt 0.12 differs from Mosquitto in ways that matter for delivery: it
speaks MQTT 3.1.1 only (an MQTT 5 CONNECT is refused), holds sessions in
memory only (a restart forgets them), queues for an offline session only when
the client sent a user name, and drops a message that is not acknowledged
within 5 s instead of redelivering it on reconnect.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from amqtt.broker import Broker

__all__ = ["broker_config", "main"]

logger = logging.getLogger("smartcommunity.amqtt_broker")


def broker_config(port: int) -> dict[str, Any]:
    """The amqtt configuration: one TCP listener on loopback.

    ``allow_anonymous: false`` makes amqtt's AnonymousAuthPlugin accept any
    client that sends a user name (it checks no password) and, unlike
    ``true``, leaves the session marked as not anonymous: amqtt queues QoS 1
    messages for an offline session and keeps it only in that case.
    Clients without a user name are refused.
    """
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
        },
    }


async def _serve(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    broker = Broker(broker_config(port))
    await broker.start()
    logger.info("amqtt broker listening on 127.0.0.1:%d", port)
    await stop.wait()
    logger.info("amqtt broker shutting down")
    await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # amqtt logs every state transition of every session at INFO.
    logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
