"""Group commit: the writer takes what has accumulated as soon as it is free.

Assertions are on what the writer saw (batch sizes, commit count) and on what
was acknowledged, never on elapsed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest

from core.decode import Limits
from core.directory import DeviceDirectory
from core.observability import PipelineCounters
from core.settings import GatewaySettings, IngestSettings
from gateway.bridge import InboundMessage, MqttBridge
from gateway.pipeline import Pipeline
from ingest.batch import Batch, WriteResult
from ingest.writer import BatchWriter
from store import device_directory
from tests.integration.support import Publisher, community_of, count, register, stream, wait_for

pytestmark = pytest.mark.integration


class RecordingSink:
    """The real writer, with the batch sizes it was given and an optional gate."""

    def __init__(self, writer: BatchWriter) -> None:
        self.writer = writer
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def write(self, batch: Batch) -> WriteResult:
        self.waiting.set()
        self.gate.wait(60)
        result = self.writer.write(batch)
        self.sizes.append(len(batch))
        return result


class AckRecordingBridge(MqttBridge):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.acked = 0

    def ack(self, messages: Iterable[InboundMessage]) -> int:
        done = super().ack(messages)
        self.acked += done
        return done


@dataclass
class Running:
    sink: RecordingSink
    bridge: AckRecordingBridge
    pipeline: Pipeline
    publisher: Publisher


@contextmanager
def running(database_url: str, mqtt_url: str, unique_id: str, community: str) -> Iterator[Running]:
    """The pipeline of the test's community, and a publisher, both closed at the end."""
    client_id = f"p-{unique_id}"
    writer = BatchWriter(url=database_url, worker=client_id)
    sink = RecordingSink(writer)
    bridge = AckRecordingBridge(
        url=mqtt_url,
        settings=GatewaySettings(client_id=client_id, topic_filter=f"community/{community}/+/+/+"),
    )
    reader = psycopg.connect(database_url)
    counters = PipelineCounters()
    pipeline = Pipeline(
        bridge=bridge,
        sink=sink,
        registry=DeviceDirectory(
            load_all=lambda: device_directory.load_all(reader), miss_refresh_s=1.0
        ),
        counters=counters,
        settings=IngestSettings(),  # the defaults: no flush timer
        limits=Limits(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    publisher = Publisher(mqtt_url, f"pub-{unique_id}")
    bridge.start()
    try:
        assert bridge.wait_connected(30), "bridge did not connect"
        thread.start()
        yield Running(sink, bridge, pipeline, publisher)
    finally:
        sink.gate.set()
        stop.set()
        thread.join(30)
        bridge.stop()
        writer.close()
        reader.close()
        publisher.close()
    assert not thread.is_alive()


def test_a_single_message_is_committed_and_acknowledged_as_a_batch_of_one(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community, devices = f"g{unique_id}", [f"g{unique_id}-0"]
    register(fresh_database_url, community, devices)
    assert IngestSettings().flush_interval_ms == 0
    base = int(time.time() * 1000) - 60_000
    with running(fresh_database_url, mqtt_url, unique_id, community) as rig:
        for n in range(3):  # one at a time, each waited for: a low rate
            stream(rig.publisher, community, devices, 1, base, start=n)
            rig.publisher.flush()
            want = n + 1
            wait_for(lambda: rig.bridge.acked == want, 30, f"ack of message {n}")  # noqa: B023
        assert rig.sink.sizes == [1, 1, 1]
    assert count(fresh_database_url) == 9


def test_messages_that_arrive_while_the_writer_is_busy_go_in_its_next_batch(
    fresh_database_url: str, mqtt_url: str, unique_id: str
) -> None:
    community, devices = community_of(fresh_database_url, f"h{unique_id}", 10)
    base = int(time.time() * 1000) - 60_000
    with running(fresh_database_url, mqtt_url, unique_id, community) as rig:
        rig.sink.gate.clear()  # the writer is busy with the first batch
        stream(rig.publisher, community, devices, 1, base)
        rig.publisher.flush()
        assert rig.sink.waiting.wait(30), "the first batch never reached the writer"
        stream(rig.publisher, community, devices, 999, base, start=1)
        rig.publisher.flush()
        # Intake goes on validating while the writer is busy, in as many pieces
        # as the messages happened to arrive in.
        wait_for(lambda: rig.pipeline.ready_messages == 999, 30, "999 messages validated")
        rig.sink.gate.set()
        wait_for(lambda: rig.bridge.acked == 1000, 60, "every message acknowledged")
    # What accumulated while the writer was busy is its next batch, whole: no
    # message waits behind batches formed earlier, nor for a timer tick.
    assert rig.sink.sizes == [1, 999]
    assert count(fresh_database_url) == 3000
