"""The HTTP API tests' app, token and helpers: one app per test file on the worker's
database, with a small page size so that capping shows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import ApiSettings, Settings
from store.accounts import create_token

# Small, so that capping is visible without creating a thousand devices.
MAX_PAGE = 5
BASE = datetime(2026, 1, 1, tzinfo=UTC)
PUBLIC_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def iso(value: datetime) -> str:
    return value.isoformat()


@pytest.fixture(name="settings", scope="module")
def settings_fixture(database_url: str) -> Settings:
    return Settings(database_url=database_url, api=ApiSettings(max_page_size=MAX_PAGE))


@pytest.fixture(name="client", scope="module")
def client_fixture(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(name="db", scope="module")
def db_fixture(client: TestClient, database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection for arranging rows directly; the client fixture has migrated the schema."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(name="token", scope="module")
def token_fixture(db: psycopg.Connection[Any]) -> str:
    return create_token(db, "integration tests")


@pytest.fixture(name="auth", scope="module")
def auth_fixture(token: str) -> dict[str, str]:
    return bearer(token)


@pytest.fixture(name="community")
def community_fixture(client: TestClient, auth: dict[str, str]) -> str:
    community_id = unique("c")
    response = client.post(
        "/api/v1/communities", json={"id": community_id, "name": "Test"}, headers=auth
    )
    assert response.status_code == 201, response.text
    return community_id


def register(
    client: TestClient, auth: dict[str, str], community_id: str, device_id: str, **extra: Any
) -> dict[str, Any]:
    body = {"id": device_id, "community_id": community_id, "device_class": "wearable", **extra}
    response = client.post("/api/v1/devices", json=body, headers=auth)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
