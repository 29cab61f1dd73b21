"""The WHERE clause the registry's lists share: a caller's communities, a page after an
id, and columns equal to the values given."""

from __future__ import annotations

from collections.abc import Collection

from psycopg import sql

__all__ = ["list_filter"]


def list_filter(
    alias: str | None,
    *,
    within: Collection[str] | None,
    after: str | None = None,
    scope: str = "community_id",
    **equal: object,
) -> tuple[sql.Composable, list[object]]:
    """``scope`` (the community column) among ``within`` (None: every community),
    ``id > after``, and ``column = value`` for each value not None; columns of table
    ``alias`` if given."""

    def column(name: str) -> sql.Identifier:
        return sql.Identifier(alias, name) if alias else sql.Identifier(name)

    terms: list[sql.Composable] = [sql.SQL("true")]
    params: list[object] = []
    if within is not None:
        terms.append(sql.SQL("{} = ANY(%s)").format(column(scope)))
        params.append(sorted(within))
    if after is not None:
        terms.append(sql.SQL("{} > %s").format(column("id")))
        params.append(after)
    for name, value in equal.items():
        if value is not None:
            terms.append(sql.SQL("{} = %s").format(column(name)))
            params.append(value)
    return sql.SQL(" AND ").join(terms), params
