"""Connection strings for a Patroni cluster: libpq multi-host with a writable target.

Workers and the API reach the database through one URL naming every node
(docs/scale-out.md); ``as_role`` rewrites that URL for each process's role, and
must keep every host, every port and ``target_session_attrs`` while doing it.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from core.settings import Settings
from store.conninfo import as_role

MULTI = (
    "postgresql://sc:secret@pg1:5432,pg2:5433,pg3:5434/smartcommunity"
    "?target_session_attrs=read-write&connect_timeout=5"
)


def test_as_role_keeps_every_host_and_the_writable_target() -> None:
    params = conninfo_to_dict(as_role(MULTI, "sc_pipeline"))
    assert params["host"] == "pg1,pg2,pg3"
    assert params["port"] == "5432,5433,5434"
    assert params["target_session_attrs"] == "read-write"
    assert params["dbname"] == "smartcommunity"
    assert params["user"] == "sc"
    assert params["password"] == "secret"
    assert params["options"] == "-c role=sc_pipeline"


def test_as_role_adds_to_options_a_multi_host_url_carries() -> None:
    url = MULTI + "&options=-c%20statement_timeout%3D5000"
    params = conninfo_to_dict(as_role(url, "sc_api", options="-c lock_timeout=1000"))
    assert params["options"] == "-c statement_timeout=5000 -c lock_timeout=1000 -c role=sc_api"
    assert params["host"] == "pg1,pg2,pg3"


def test_settings_take_a_multi_host_url() -> None:
    settings = Settings(database_url=MULTI)
    assert settings.database_url == MULTI
