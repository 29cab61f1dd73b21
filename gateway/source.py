"""What the pipeline needs of a message source: ``MqttBridge`` or ``AmqpSource``."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import Protocol

from gateway.bridge import InboundMessage

__all__ = ["MessageSource"]


class MessageSource(Protocol):
    """Delivers into ``inbox``; ``ack`` confirms committed messages to the broker."""

    inbox: queue.SimpleQueue[InboundMessage]
    connected: threading.Event
    reconnects: int
    last_error: str | None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def wait_connected(self, timeout: float) -> bool: ...

    def network_alive(self) -> bool: ...

    def ack(self, messages: Iterable[InboundMessage]) -> int: ...
