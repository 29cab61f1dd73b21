"""Device and service credentials: Mosquitto's password hashes and the broker's files."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from core.broker_acl import (
    BrokerDevice,
    ServiceAccount,
    ServiceRole,
    render_acl_file,
    render_password_file,
)
from core.passwords import hash_password, new_secret, verify_password

MOSQUITTO_LINE = (
    "$7$101$tPg5VO3A9jdFcMl+$/SKiqLvWzSAMfd6wtilrZUE3N1VZyYk/zTixppF0WN8nNfW0oQutkgR54XyaVfL"
    "VtBzfwbnrKdHCK88Xtqchyg=="
)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# --- passwords ----------------------------------------------------------------------------


def test_hashes_are_mosquittos_own_format() -> None:
    assert verify_password("secret", MOSQUITTO_LINE)
    assert not verify_password("Secret", MOSQUITTO_LINE)
    salt = base64.b64decode("tPg5VO3A9jdFcMl+")
    assert hash_password("secret", salt=salt) == MOSQUITTO_LINE


def test_generated_secrets_are_long_random_and_never_stored() -> None:
    first, second = new_secret(), new_secret()
    assert first != second
    assert len(first) >= 43
    hashed = hash_password(first)
    assert first not in hashed
    assert verify_password(first, hashed)
    assert hash_password(first) != hashed  # salted


@pytest.mark.parametrize(
    "bad", ["", "$6$1$a$b", "$7$x$AA==$AA==", "$7$5$!!$AA==", "$7$0$AA==$AA=="]
)
def test_malformed_hashes_verify_nothing(bad: str) -> None:
    assert not verify_password("secret", bad)


# --- the broker's files ------------------------------------------------------------------


def test_password_and_acl_files() -> None:
    devices = [BrokerDevice("w1", "c1", "wearable", "$7$101$a$b")]
    accounts = [
        ServiceAccount("pipe", ServiceRole.PIPELINE, "$7$1$c$d"),
        ServiceAccount("api", ServiceRole.API, "$7$1$e$f"),
    ]
    # The pipeline's alert publisher and incident desk have companion accounts with the
    # same hash.
    assert render_password_file(devices, accounts) == (
        "pipe:$7$1$c$d\npipe-alerts:$7$1$c$d\npipe-incidents:$7$1$c$d\napi:$7$1$e$f\n"
        "w1:$7$101$a$b\n"
    )
    acl = render_acl_file(devices, accounts, generated_at=NOW)
    assert (
        "user pipe\ntopic read community/+/+/+/+\ntopic write community/+/alerts/#\n"
        "topic write community/+/dispatch/+\ntopic read community/+/dispatch-reply/+\n"
        "topic write community/+/control-room/escalations\n\n"
        "user pipe-alerts\ntopic write community/+/alerts/#\n\n"
        "user pipe-incidents\ntopic write community/+/dispatch/+\n"
        "topic read community/+/dispatch-reply/+\n"
        "topic write community/+/control-room/escalations\n\n"
        "user api\ntopic read community/+/alerts/#\n"
        "topic read community/+/control-room/escalations\n" in acl
    )
    assert (
        "user w1\ntopic write community/c1/wearable/w1/#\n"
        "topic read community/c1/wearable/w1/cmd\n" in acl
    )
    assert "pattern" not in acl  # explicit grants only
    assert render_password_file([], []) == ""
