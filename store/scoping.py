"""The community filter that store queries add to their WHERE clauses.

Callers pass the communities a caller may see (``None``: every community); the
clause is built here from constant expressions, never from input.
"""

from __future__ import annotations

from collections.abc import Collection

__all__ = ["Communities", "community_filter"]

Communities = Collection[str] | None  # None: every community


def community_filter(
    communities: Communities, expression: str = "community_id", *, everywhere: bool = False
) -> tuple[str, list[object]]:
    """``(clause, params)`` keeping rows of ``communities``; ``everywhere`` keeps rows
    without a community (global ones) too. ``expression`` is code, never input."""
    if communities is None:
        return "true", []
    clause = f"{expression} = ANY(%s)"
    if everywhere:
        clause = f"({expression} IS NULL OR {clause})"
    return clause, [sorted(communities)]
