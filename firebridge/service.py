"""Wires store, publisher, commit watcher and server into the ``fire-bridge`` service."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from core.decode import Limits
from core.errors import ConfigurationError
from core.settings import Settings
from firebridge.commits import CommitWatcher
from firebridge.publisher import CanonicalPublisher
from firebridge.server import FireBridge
from firebridge.store import BridgeStore
from store import schema

__all__ = ["bridge_in_thread", "run_fire_bridge", "serve"]

_LOG = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    """The bridge as a process's one service: until SIGINT or SIGTERM, saying its port
    once it listens (``python -m firebridge``)."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)

        def started(bridge: FireBridge) -> None:
            print(f"fire bridge listening on port {bridge.port}", flush=True)

        with suppress(asyncio.CancelledError):
            await run_fire_bridge(settings, on_started=started)

    asyncio.run(main())


async def run_fire_bridge(
    settings: Settings,
    *,
    on_started: Callable[[FireBridge], None] | None = None,
) -> None:
    """Serve UITDs until cancelled."""
    if settings.database_url is None or settings.mqtt_url is None:
        raise ConfigurationError("set SC_DATABASE_URL and SC_MQTT_URL")
    await asyncio.to_thread(schema.upgrade, settings.database_url)
    bridge_settings = settings.fire_bridge
    store = BridgeStore(url=settings.database_url, worker=bridge_settings.client_id)
    publisher = CanonicalPublisher(settings.mqtt_url, client_id=bridge_settings.client_id)
    await store.open()
    try:
        await publisher.start()
        bridge = FireBridge(
            settings=bridge_settings,
            limits=Limits(
                max_payload_bytes=settings.validation.max_payload_bytes,
                max_future_s=settings.validation.max_future_s,
            ),
            store=store,
            publisher=publisher,
            watcher=CommitWatcher(store, poll_s=bridge_settings.commit_poll_s),
        )
        started = asyncio.Event()
        serving = asyncio.create_task(bridge.serve(started=started), name="fire-bridge")
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({serving, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            waiter.cancel()
            await serving  # raises what stopped it
        if on_started is not None:
            on_started(bridge)
        await serving
    finally:
        publisher.stop()
        await store.close()
        _LOG.info("fire bridge stopped")


@contextmanager
def bridge_in_thread(settings: Settings, *, start_s: float = 30.0) -> Iterator[FireBridge]:
    """The bridge on an event loop of its own in this process (a scenario run's, the
    tests'): started and serving when the block begins, stopped when it ends."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def on_started(bridge: FireBridge) -> None:
        holder["bridge"] = bridge
        started.set()

    async def serve() -> None:
        holder["task"] = asyncio.current_task()
        await run_fire_bridge(settings, on_started=on_started)

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            holder["error"] = exc
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=target, name="fire-bridge", daemon=True)
    thread.start()
    if not started.wait(start_s):
        raise ConfigurationError(f"the fire bridge did not start within {start_s:g}s")
    error = holder.get("error")
    if isinstance(error, BaseException):
        raise ConfigurationError(f"the fire bridge did not start: {error}") from error
    bridge = holder["bridge"]
    assert isinstance(bridge, FireBridge)
    try:
        yield bridge
    finally:
        task = holder["task"]
        assert isinstance(task, asyncio.Task)
        loop.call_soon_threadsafe(task.cancel)
        thread.join(30)
