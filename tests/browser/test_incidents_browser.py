"""The dispatch board in headless Chromium: an open fire incident with its countdown
ticking, who is on duty (and a team with nobody), and an operator dispatching the
on-duty team from the incident's card; the dispatch is in the database and on the card,
and the incident closed from the card shows with its times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from core.access import Role
from tests.browser.test_dashboard_browser import sign_in
from tests.integration.dashboard_support import community, execute, fresh, token
from tests.servers import ApiServer

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration
COUNTDOWN = re.compile(r"^-?\d+:\d\d$")


def test_the_board_counts_down_and_dispatches(
    page: Page, api_server: ApiServer, artifacts: Path
) -> None:
    url, c = api_server.database_url, fresh("c")
    community(url, c, "Countdown Garden")
    execute(url, "INSERT INTO buildings (community_id, id, name) VALUES (%s, 'B3', '3号楼')", (c,))
    execute(
        url,
        "INSERT INTO responders (id, community_id, name, role) VALUES"
        " (%s, %s, '王消防', 'micro_fire_station'), (%s, %s, '李保安', 'guard')",
        (f"{c}-wang", c, f"{c}-li", c),
    )
    execute(
        url,
        "INSERT INTO teams (id, community_id, building_id, name, kind) VALUES"
        " (%s, %s, 'B3', '3号楼微型消防站', 'micro_fire_station'),"
        " (%s, %s, NULL, '保安队', 'security')",
        (f"{c}-fire", c, f"{c}-guards", c),
    )
    for day in range(7):  # the station around the clock; the guards' team has nobody
        execute(
            url,
            "INSERT INTO shifts (community_id, team_id, responder_id, weekday, starts, ends)"
            " VALUES (%s, %s, %s, %s, '00:00', '00:00')",
            (c, f"{c}-fire", f"{c}-wang", day),
        )
    # A pre-alarm (one detector): an incident nobody has been sent to yet.
    now = datetime.now(UTC) - timedelta(seconds=20)
    execute(
        url,
        "INSERT INTO alerts (rule_id, subject, community_id, building, rule_type, severity,"
        " initial_severity, state, title, first_seen, last_seen, raised_at) VALUES"
        " ('fire.confirmed', 'building:B3', %s, 'B3', 'correlation', 'major', 'major', 'open',"
        " 'Fire pre-alarm', %s, %s, %s)",
        (c, now, now, now),
    )
    sign_in(page, api_server, token(url, Role.OPERATOR, [c]))
    page.evaluate("location.hash = '#/incidents'")
    card = page.wait_for_selector("article.incident.type-fire")
    assert card is not None
    countdown = page.wait_for_selector("article.incident .countdown")
    assert countdown is not None
    first = countdown.text_content() or ""
    assert COUNTDOWN.match(first), first
    # It ticks: a different value within a few seconds, without a reload.
    page.wait_for_function(
        "t => document.querySelector('article.incident .countdown').textContent !== t",
        arg=first,
        timeout=5_000,
    )
    duty = page.text_content("#duty-board") or ""
    assert "王消防" in duty
    assert page.query_selector(f"#duty-board .team.nobody[data-team='{c}-guards']") is not None

    page.select_option("article.incident select.dispatch-target", f"team:{c}-fire")
    page.click("article.incident button.dispatch-button")
    page.wait_for_selector(f"article.incident li.dispatch[data-responder='{c}-wang']")
    assert "已派遣" in (page.text_content("article.incident .stage") or "")
    sent = execute(
        url,
        "SELECT x.responder_id, x.team_id, x.dispatched_by LIKE 'user:%%' FROM dispatches AS x"
        " JOIN incidents AS i ON i.id = x.incident_id WHERE i.community_id = %s",
        (c,),
    )
    assert sent == [(f"{c}-wang", f"{c}-fire", True)]
    steps = page.text_content("article.incident ol.timeline") or ""
    assert "报警" in steps
    assert "派遣" in steps
    # English, as the rest of the board.
    page.click("#lang-toggle")
    page.wait_for_selector("html[lang=en]")
    page.wait_for_function(
        "() => document.querySelector('article.incident .stage').textContent === 'dispatched'"
    )
    page.screenshot(path=str(artifacts / "dashboard-incidents-1920x1080.png"))
    # Closed from the card: it leaves the open list for the closed table, with its times.
    page.click("article.incident button.resolve-button")
    page.wait_for_selector("#closed-incidents tbody tr")
    page.wait_for_selector("article.incident", state="detached")
    assert re.search(r"\d+ s", page.text_content("#closed-incidents tbody tr") or "")
