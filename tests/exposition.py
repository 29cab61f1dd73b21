"""A /metrics body read back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Sample", "parse_exposition"]

Sample = tuple[str, tuple[tuple[str, str], ...]]


def parse_exposition(text: str) -> tuple[dict[str, str], dict[Sample, float]]:
    """Each family's type, and each sample's value by (sample name, sorted labels)."""
    types: dict[str, str] = {}
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return types, samples
