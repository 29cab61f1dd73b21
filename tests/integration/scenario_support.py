"""The scenario tests' control room: the HTTP API the checker reads alerts from."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from core.settings import Settings
from simulators.checker import ApiAlerts
from store.accounts import create_token
from tests.servers import running_api


@dataclass(frozen=True)
class ControlRoom:
    url: str
    token: str

    def alerts(self) -> ApiAlerts:
        return ApiAlerts(base_url=self.url, token=self.token)


@pytest.fixture(name="control_room")
def control_room_fixture(fresh_database_url: str) -> Iterator[ControlRoom]:
    """The API on the test's database (migrated by its start) and a token for it."""
    with running_api(Settings(database_url=fresh_database_url)) as api:
        with psycopg.connect(fresh_database_url) as conn:
            token = create_token(conn, "scenario checker")
        yield ControlRoom(api.url, token)
