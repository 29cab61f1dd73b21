"""The community filter that store queries add to their WHERE clauses, and where an
object lives (its community), for the API's object-level checks.

Callers pass the communities a caller may see (``None``: every community); the
clause is built here from constant expressions, never from input.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from store.rows import Conn

__all__ = ["Communities", "community_filter", "dispatch_owner", "given", "locate", "scoped"]


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


def scoped(
    communities: Communities,
    terms: Iterable[tuple[str, object | None]],
    expression: str = "community_id",
    *,
    everywhere: bool = False,
) -> tuple[list[str], list[object]]:
    """A list's WHERE terms (to join with AND) and their parameters: the community
    filter (``community_filter``) and the ``terms`` whose value is given (``given``)."""
    scope, params = community_filter(communities, expression, everywhere=everywhere)
    where, values = given(terms)
    return [scope, *where], params + values


# Located by migration 0010's sc_locate_incident.
_INCIDENT_ENTITIES = frozenset({"responder", "team", "incident", "dispatch"})


def locate(conn: Conn, entity: str, target: object) -> tuple[bool, str | None]:
    """(exists, community: None for a global rule or webhook) of an object.

    ``sc_locate`` (migration 0007) looks past row-level security: another community's
    object must be audited when refused, and must not read as free to create.
    """
    query = "SELECT sc_locate(%s, %s)"
    if entity in _INCIDENT_ENTITIES:
        query = "SELECT sc_locate_incident(%s, %s)"
    row = conn.execute(query, (entity, str(target))).fetchone()
    if row is None or row[0] is None:
        return False, None
    return True, row[0][0]


def dispatch_owner(conn: Conn, dispatch_id: int) -> tuple[int | None, str] | None:
    """(the user of the dispatched responder, the dispatch's community); None: no
    such dispatch (as row-level security lets the caller see it)."""
    return conn.execute(
        "SELECT r.user_id, x.community_id FROM dispatches AS x"
        " JOIN responders AS r ON r.id = x.responder_id WHERE x.id = %s",
        (dispatch_id,),
    ).fetchone()
