"""The ``/metrics`` exposition, written by prometheus_client.

The figures are not this process's own: pipeline workers save their counters to
``pipeline_metrics`` and the registry and dead letters live in their tables, so
a collector built per request turns what the route read from the database into
metric families, and prometheus_client writes the text format.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from core.observability import KEY_LABELS, PIPELINE_METRICS

__all__ = ["CONTENT_TYPE", "Figures", "render"]

# The classic text format (0.0.4): what every Prometheus scrapes without negotiation.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

Labelled = list[tuple[Mapping[str, str], float]]


@dataclass(slots=True)
class Figures:
    """What one scrape read: each worker's saved snapshot and the database gauges."""

    workers: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    saved_at: Labelled = field(default_factory=list)
    dead_letters: Labelled = field(default_factory=list)
    devices: Labelled = field(default_factory=list)
    reporting: Labelled = field(default_factory=list)


# Gauges read from the tables on each scrape: (name, help, the Figures field).
_GAUGES = (
    (
        "sc_pipeline_snapshot_timestamp_seconds",
        "When each worker last saved its counters (Unix time); alert on staleness",
        "saved_at",
    ),
    ("sc_dead_letters", "Dead letters stored in the database, by reason", "dead_letters"),
    ("sc_devices", "Registered devices, by class and state", "devices"),
    (
        "sc_devices_reporting",
        "Devices that sent data within twice their expected interval",
        "reporting",
    ),
)


class _Collector:
    """A collector over figures already read: ``collect`` does no I/O."""

    def __init__(self, figures: Figures) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        yield from _pipeline(self._figures.workers)
        for name, help_text, attribute in _GAUGES:
            yield _gauge(name, help_text, getattr(self._figures, attribute))


def render(figures: Figures) -> bytes:
    """The text exposition of ``figures``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(figures))
    return generate_latest(registry)


def _gauge(name: str, help_text: str, samples: Labelled) -> GaugeMetricFamily:
    labels = sorted({key for sample_labels, _ in samples for key in sample_labels})
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for sample_labels, value in samples:
        family.add_metric([sample_labels[key] for key in labels], value)
    return family


def _pipeline(workers: Mapping[str, Mapping[str, Any]]) -> Iterable[Metric]:
    """One family per pipeline figure, a sample per worker that saved it."""
    for name, (kind, help_text) in PIPELINE_METRICS.items():
        metric = f"sc_pipeline_{name}"
        family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        # A figure saved as a mapping (rejections by reason, shards) has a label more.
        labels = [KEY_LABELS[name], "worker"] if name in KEY_LABELS else ["worker"]
        if kind == "histogram":
            family = HistogramMetricFamily(metric, help_text, labels=["worker"])
        elif kind == "counter":
            family = CounterMetricFamily(metric, help_text, labels=labels)
        else:
            family = GaugeMetricFamily(metric, help_text, labels=labels)
        for worker, snapshot in sorted(workers.items()):
            value = snapshot.get(name)
            if value is None:
                continue
            if isinstance(family, HistogramMetricFamily):
                # Saved counts are cumulative already (core.observability._Histogram).
                buckets = [
                    (str(bound), float(count))
                    for bound, count in zip(value["buckets"], value["counts"], strict=True)
                ]
                buckets.append(("+Inf", float(value["count"])))
                family.add_metric([worker], buckets, float(value["sum"]))
            elif isinstance(value, Mapping):
                for key, count in sorted(value.items()):
                    family.add_metric([key, worker], float(count))
            else:
                family.add_metric([worker], float(value))
        yield family
