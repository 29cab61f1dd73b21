"""``/`` and ``/dashboard``: the control-room page; ``/dashboard/static/...``: its files.

No credentials are needed for these: they hold no data. The page signs in with a
bearer token and reads everything through ``/api/v1``. Only the files that ship
in ``static/`` are served (a fixed table made at import), so no path a client
sends can reach anything else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads its own scripts and styles only and talks only to this origin; it
# draws charts as inline SVG built through the DOM, so nothing inline is allowed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; font-src 'self'; media-src 'self'; object-src 'none';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Revalidate every time (the ETag makes that cheap): an upgraded server is seen at once.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def _shipped() -> dict[str, Path]:
    return {
        p.relative_to(STATIC_DIR).as_posix(): p
        for p in sorted(STATIC_DIR.rglob("*"))
        if p.is_file() and p.suffix in _TYPES
    }


_FILES = _shipped()


def _serve(name: str) -> FileResponse:
    path = _FILES.get(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such file")
    headers = dict(_HEADERS)
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=headers)


@router.get("/")
@router.get("/dashboard")
def dashboard_page() -> FileResponse:
    """The dashboard (it signs in with a bearer token and reads the API)."""
    return _serve("index.html")


@router.get("/dashboard/static/{name:path}")
def dashboard_file(name: str) -> FileResponse:
    return _serve(name)
