"""The community filter that store queries add to their WHERE clauses.

Callers pass the communities a caller may see (``None``: every community); the
clause is built here from constant expressions, never from input.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["Communities", "community_filter", "given"]

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


def given(terms: Iterable[tuple[str, object | None]]) -> tuple[list[str], list[object]]:
    """The WHERE terms whose value is given (not None), and their parameters: each
    term is constant SQL with one ``%s``, e.g. ``("raised_at >= %s", since)``."""
    where: list[str] = []
    params: list[object] = []
    for term, value in terms:
        if value is not None:
            where.append(term)
            params.append(value)
    return where, params
