"""The broker's logins: the one writer of ``mqtt_accounts`` (service accounts: add or
rotate, remove, list), and what the broker export reads of the registry for
Mosquitto's password and ACL files (devices, service accounts, responders with an
MQTT login), in one consistent snapshot (``consistent_read``).

The export's decisions (who may log in, what a name may be) are
``smartcommunity/broker_export.py``'s and ``core.broker_acl``'s; these functions
return plain rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from store.rows import Conn

__all__ = [
    "account_rows",
    "consistent_read",
    "delete_account",
    "device_login_rows",
    "list_accounts",
    "responder_login_rows",
    "save_account",
]


@contextmanager
def consistent_read(conn: Conn) -> Iterator[None]:
    """A repeatable-read transaction: every read inside it sees one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def device_login_rows(conn: Conn) -> list[tuple[str, str, str, str, str | None]]:
    """Every device: (id, community, class, state, MQTT password hash), by id."""
    return [
        (device_id, community, device_class, state, password_hash)
        for device_id, community, device_class, state, password_hash in conn.execute(
            "SELECT id, community_id, device_class, state, mqtt_password_hash FROM devices"
            " ORDER BY id"
        )
    ]


def account_rows(conn: Conn) -> list[tuple[str, str, str]]:
    """Every service account: (username, role, password hash), by username."""
    return [
        (username, role, password_hash)
        for username, role, password_hash in conn.execute(
            "SELECT username, role, password_hash FROM mqtt_accounts ORDER BY username"
        )
    ]


def responder_login_rows(conn: Conn) -> list[tuple[str, str, str, str]]:
    """Responders with an MQTT login: (username, community, responder id, password
    hash), by responder id."""
    return [
        (username, community, responder, password_hash)
        for username, community, responder, password_hash in conn.execute(
            "SELECT mqtt_username, community_id, id, mqtt_password_hash FROM responders"
            " WHERE mqtt_username IS NOT NULL AND mqtt_password_hash IS NOT NULL ORDER BY id"
        )
    ]


def save_account(conn: Conn, username: str, role: str, password_hash: str) -> bool:
    """Add the service account, or give an existing one this role and password. False,
    and nothing written, when a device has that id."""
    with conn.transaction():
        taken = conn.execute("SELECT 1 FROM devices WHERE id = %s", (username,)).fetchone()
        if taken:
            return False
        conn.execute(
            "INSERT INTO mqtt_accounts (username, role, password_hash) VALUES (%s, %s, %s)"
            " ON CONFLICT (username) DO UPDATE SET role = excluded.role,"
            " password_hash = excluded.password_hash, rotated_at = now()",
            (username, role, password_hash),
        )
    return True


def delete_account(conn: Conn, username: str) -> bool:
    """Whether there was such an account."""
    with conn.transaction():
        cur = conn.execute("DELETE FROM mqtt_accounts WHERE username = %s", (username,))
    return cur.rowcount == 1


def list_accounts(conn: Conn) -> list[tuple[str, str, datetime, datetime | None]]:
    """Every service account: (username, role, created, last rotated), by username."""
    return [
        (str(r[0]), str(r[1]), r[2], r[3])
        for r in conn.execute(
            "SELECT username, role, created_at, rotated_at FROM mqtt_accounts ORDER BY username"
        )
    ]
