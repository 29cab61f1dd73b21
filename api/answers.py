"""Answers the routes share for an object looked up or created: 404 when it is not
there, 409 when its id is taken."""

from __future__ import annotations

from typing import TypeVar

from fastapi import HTTPException, status

from api.scope import not_found

__all__ = ["found_or_404", "made_or_409"]

T = TypeVar("T")


def found_or_404(found: T | None, detail: str) -> T:
    """``found``, or a 404 saying ``detail`` (no such object, or not the caller's)."""
    if found is None:
        raise not_found(detail)
    return found


def made_or_409(made: T | None, detail: str) -> T:
    """``made``, or a 409 saying ``detail`` (the store created nothing: the id is taken)."""
    if made is None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=detail)
    return made
