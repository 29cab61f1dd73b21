"""``python -m firebridge``: the bridge alone, without the CLI's other commands (a
lighter process for a service manager); ``smartcommunity fire-bridge`` is the same."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from core.settings import Settings
from firebridge.server import FireBridge
from firebridge.service import run_fire_bridge


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)

        def started(bridge: FireBridge) -> None:
            print(f"fire bridge listening on port {bridge.port}", flush=True)

        with contextlib.suppress(asyncio.CancelledError):
            await run_fire_bridge(settings, on_started=started)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
