"""Benchmarks that print figures; run them as scripts (see each module's docstring)."""
