"""422 answers shaped like FastAPI's own validation errors, for checks a model cannot make."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException, status

__all__ = ["body_error", "unprocessable"]


def unprocessable(loc: Sequence[str], msg: str, kind: str = "value_error") -> HTTPException:
    """A 422 with one error at ``loc`` (``("query", "after")``, ``("body",)``...)."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": list(loc), "msg": msg, "type": kind}],
    )


def body_error(field: str, msg: str, kind: str = "value_error") -> HTTPException:
    """A 422 about the request body's ``field``."""
    return unprocessable(("body", field), msg, kind)
