"""Pipeline counters and the catalogue of their names.

A worker keeps a ``PipelineCounters`` in memory and saves ``snapshot()`` to the
``pipeline_metrics`` table every few seconds; the API (another process, maybe
another machine) exposes all workers' snapshots on ``/metrics``
(``api/exposition.py``, with prometheus_client), named and typed as
``PIPELINE_METRICS`` says.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = [
    "BATCH_BUCKETS",
    "COMMIT_BUCKETS",
    "KEY_LABELS",
    "PIPELINE_METRICS",
    "PipelineCounters",
]

# Commit latency buckets in seconds: a healthy batch commits in tens of ms.
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000)

# What each saved figure is: (Prometheus type, help text); exported as sc_pipeline_<name>.
PIPELINE_METRICS: dict[str, tuple[str, str]] = {
    "messages_received_total": ("counter", "MQTT messages handed to the pipeline"),
    "messages_accepted_total": ("counter", "Messages whose content was committed"),
    "messages_rejected_total": ("counter", "Messages stored as dead letters, by reason"),
    "messages_duplicate_total": ("counter", "Rows already stored (redelivery or device resend)"),
    "rows_written_total": ("counter", "Reading rows inserted"),
    "events_written_total": ("counter", "Device events inserted"),
    "batches_committed_total": ("counter", "Transactions committed"),
    "database_errors_total": ("counter", "Failed write attempts (retried)"),
    "database_connections_lost_total": (
        "counter",
        "Pooled database connections found broken and replaced (store.pools)",
    ),
    "database_reconnect_failures_total": (
        "counter",
        "Times a connection pool gave up reconnecting after its reconnect timeout"
        " (the next request tries again)",
    ),
    "reconnects_total": ("counter", "Broker reconnects"),
    "alink_replies_total": ("counter", "Answers published to Alink devices after commit"),
    "alink_replies_unsent_total": ("counter", "Alink answers not sent: broker link down"),
    "queue_depth": ("gauge", "Messages received and not yet in a batch"),
    "awaiting_ack": ("gauge", "Messages received and not yet acknowledged to the broker"),
    "engine_lag_messages": ("gauge", "Committed messages the rule engine has not evaluated yet"),
    "engine_lag_seconds": ("gauge", "Age of the oldest commit the rule engine has not evaluated"),
    "batch_size": ("histogram", "Messages per committed batch"),
    "commit_seconds": ("histogram", "Time to write and commit one batch"),
    # Clustered workers only (gateway.cluster, docs/scale-out.md).
    "shards_active": ("gauge", "Shard queues this worker is the active consumer of"),
    "shard_active": ("gauge", "1 where this worker is the shard's active consumer"),
    "shard_queue_depth": ("gauge", "Messages ready in the shard's queue (its lag)"),
    "shard_takeovers_total": ("counter", "Shards this worker became active on"),
    "shard_releases_total": ("counter", "Shards handed over to balance the workers"),
    "shard_activation_failures_total": (
        "counter",
        "Takeovers given back because the rule state could not be rebuilt (database down)",
    ),
    "shard_rebuilds_total": ("counter", "Rule-state rebuilds from PostgreSQL on takeover"),
    "shard_rebuild_seconds": ("gauge", "Duration of the last rule-state rebuild"),
    "engine_skipped_total": ("counter", "Committed messages of shards no longer ours"),
    "unrouted_moved_total": ("counter", "Messages of unbound communities bound and moved"),
}
# Figures saved as a mapping: one sample per key, under this label.
KEY_LABELS = {
    "messages_rejected_total": "reason",
    "shard_active": "shard",
    "shard_queue_depth": "shard",
}


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "buckets": list(self.buckets),
            "counts": list(self.counts),
            "sum": self.total,
            "count": self.count,
        }


class PipelineCounters:
    """Thread-safe counters of one worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {
            "messages_received_total": 0,
            "messages_accepted_total": 0,
            "messages_duplicate_total": 0,
            "rows_written_total": 0,
            "events_written_total": 0,
            "batches_committed_total": 0,
            "database_errors_total": 0,
            "database_connections_lost_total": 0,
            "database_reconnect_failures_total": 0,
            "reconnects_total": 0,
            "alink_replies_total": 0,
            "alink_replies_unsent_total": 0,
            "queue_depth": 0,
            "awaiting_ack": 0,
            "engine_lag_messages": 0,
        }
        self.gauges: dict[str, float] = {"engine_lag_seconds": 0.0}
        self.rejected: dict[str, int] = {}
        self.batch_size = _Histogram(BATCH_BUCKETS)
        self.commit_seconds = _Histogram(COMMIT_BUCKETS)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.values[name] += amount

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self.values[name] = value

    def gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def reject(self, reason: str, amount: int = 1) -> None:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + amount

    def committed(self, *, messages: int, seconds: float) -> None:
        with self._lock:
            self.values["batches_committed_total"] += 1
            self.batch_size.observe(messages)
            self.commit_seconds.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **self.values,
                **self.gauges,
                "messages_rejected_total": dict(self.rejected),
                "batch_size": self.batch_size.snapshot(),
                "commit_seconds": self.commit_seconds.snapshot(),
            }
