"""Batched writes, dead letters and device last-seen."""
