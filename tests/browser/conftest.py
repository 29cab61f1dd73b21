"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright's
Python package, against the API served in a thread on a free port and a fresh
database. A missing Chromium or Playwright fails these tests with the line that
installs it; they never skip.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.settings import Settings
from store import schema
from tests.servers import ApiServer, running_api

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, ViewportSize

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
# A browser that does nothing on its own: no network but ours, no updates, no sync,
# no first-run pages, no GPU (there is none), no sandbox (CI runs as root).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WALL: ViewportSize = {"width": 1920, "height": 1080}
LAPTOP: ViewportSize = {"width": 1366, "height": 768}
# Messages a browser logs for answers the page expects (a 404 for another community's
# alert, refused connections while the server is down) are not the page's errors.
_EXPECTED_CONSOLE = ("Failed to load resource", "net::ERR_")


def require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package; never"
            " `playwright install`)",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401 - checked here to fail with the fix
    except ImportError:
        pytest.fail(
            "the playwright package is missing: pip install playwright (pyproject's dev extras)",
            pytrace=False,
        )


def require_cjk_font() -> None:
    """Without a CJK font Chromium draws Chinese as empty boxes: fail, saying what fixes it."""
    fc_list = shutil.which("fc-list")
    found = subprocess.run(
        [fc_list, ":lang=zh"], capture_output=True, text=True, check=False
    ).stdout if fc_list else ""  # fmt: skip
    if not found.strip():
        pytest.fail("no Chinese font: apt-get install -y fonts-noto-cjk", pytrace=False)


@pytest.fixture
def api_server(fresh_database_url: str) -> Iterator[ApiServer]:
    schema.upgrade(fresh_database_url)
    with running_api(Settings(database_url=fresh_database_url)) as server:
        yield server


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    """Chromium with a profile of its own, in UTC: times on the page must come out in
    the community's zone, not the browser's."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=WALL,
            locale="zh-CN",
            timezone_id="UTC",
        )
        # Waits for what must appear, however loaded the machine (the suite runs in
        # several workers); what must be quick says so with a timeout of its own.
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """The page; an uncaught error or an error the page logs fails the test."""
    page = browser.pages[0] if browser.pages else browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith(_EXPECTED_CONSOLE)
            else None
        ),
    )
    yield page
    assert not errors, "\n".join(errors)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
