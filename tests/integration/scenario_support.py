"""The scenario tests' control room: the HTTP API the checker reads alerts from, and the
database a run's cast is registered in and retired from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypedDict

import psycopg
import pytest

from core.settings import Settings
from simulators.checker import ApiAlerts
from simulators.registration import register_scenario, retire_scenario
from simulators.scenario import BoundScenario
from store.accounts import create_token
from tests.servers import running_api


class RunHooks(TypedDict):
    """The control room's part of a scenario run (``run_scenario``'s keywords)."""

    alerts: ApiAlerts
    register: Callable[[BoundScenario], None]
    retire: Callable[[BoundScenario], None]


@dataclass(frozen=True)
class ControlRoom:
    url: str
    token: str
    database_url: str

    def alerts(self) -> ApiAlerts:
        return ApiAlerts(base_url=self.url, token=self.token)

    def run_hooks(
        self, register: Callable[[str, BoundScenario], object] = register_scenario
    ) -> RunHooks:
        """The alerts a run is judged by, and its cast registered in this database by
        ``register`` and retired from it when the run ends."""
        url = self.database_url

        def registered(bound: BoundScenario) -> None:
            register(url, bound)

        return RunHooks(
            alerts=self.alerts(),
            register=registered,
            retire=lambda bound: retire_scenario(url, bound),
        )


@pytest.fixture(name="control_room")
def control_room_fixture(fresh_database_url: str) -> Iterator[ControlRoom]:
    """The API on the test's database (migrated by its start) and a token for it."""
    with running_api(Settings(database_url=fresh_database_url)) as api:
        with psycopg.connect(fresh_database_url) as conn:
            token = create_token(conn, "scenario checker")
        yield ControlRoom(api.url, token, fresh_database_url)
