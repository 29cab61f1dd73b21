"""Connection strings that run a process's queries as its database role.

The pipeline logs in as the configured user and works as ``sc_pipeline`` (migration
0008): ``-c role=...`` in the connection's startup options makes the role the
session's default, so even a ``RESET ROLE`` stays within it. The role's name is
checked by the settings (lower-case letters, digits, ``_``), so it needs no quoting.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["as_role"]


def as_role(url: str, role: str, *, options: str = "") -> str:
    """``url`` with ``role`` (none when empty) and ``options`` added to any startup
    options it already carries."""
    params = conninfo_to_dict(url)
    extra = [str(params.get("options") or ""), options, f"-c role={role}" if role else ""]
    joined = " ".join(part for part in extra if part)
    if joined:
        params["options"] = joined
    return make_conninfo("", **params)
