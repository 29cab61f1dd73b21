"""``smartcommunity user ...``: people, their role and the communities it applies to.

Tokens for a user: ``smartcommunity token create NAME --user USER``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import psycopg

from core.access import Role
from smartcommunity.cli_support import connect, print_table
from smartcommunity.commands import SubParsers, command_group, subcommand
from store import accounts
from store.accounts import UserRecord

__all__ = ["create_as_asked", "register", "scoped"]


def _fail(message: str) -> int:
    print(f"smartcommunity user: {message}", file=sys.stderr)
    return 1


def scoped(args: argparse.Namespace) -> bool:
    """Whether ``--community`` or ``--all-communities`` says where the role applies."""
    return bool(args.community or args.all_communities)


def create_as_asked(
    conn: psycopg.Connection[Any], name: str, args: argparse.Namespace
) -> UserRecord:
    """The user ``--role``, ``--community`` and ``--all-communities`` describe."""
    return accounts.create_user(
        conn, name, Role(args.role), args.community or [], all_communities=args.all_communities
    )


def _create(args: argparse.Namespace) -> int:
    if not scoped(args):
        return _fail("give --community (repeat for several) or --all-communities")
    with connect() as conn:
        try:
            user = create_as_asked(conn, args.name, args)
        except accounts.UserError as exc:
            return _fail(str(exc))
    where = "every community" if user.all_communities else ", ".join(user.communities)
    print(f"created user {user.name} (id {user.id}): {user.role} of {where}")
    print(
        f"# give them a token: smartcommunity token create NAME --user {user.name}", file=sys.stderr
    )
    return 0


def _list(_args: argparse.Namespace) -> int:
    with connect() as conn:
        users = accounts.list_users(conn, within=None, after=None, limit=100_000)
    print_table(
        ("id", "name", "role", "communities", "disabled"),
        (
            (
                u.id,
                u.name,
                u.role.value,
                "*" if u.all_communities else ",".join(u.communities),
                f"{u.disabled_at:%Y-%m-%d}" if u.disabled_at else "",
            )
            for u in users
        ),
    )
    return 0


def _update(args: argparse.Namespace) -> int:
    with connect() as conn:
        user = accounts.find_user(conn, args.name)
        if user is None:
            return _fail(f"no user {args.name!r}")
        try:
            user = accounts.update_user(
                conn,
                user.id,
                role=Role(args.role) if args.role else None,
                communities=args.community,
                all_communities=args.all_communities,
                disabled=args.disabled,
            )
        except accounts.UserError as exc:
            return _fail(str(exc))
    where = "every community" if user.all_communities else ", ".join(user.communities) or "none"
    state = " (disabled)" if user.disabled_at else ""
    print(f"user {user.name}: {user.role} of {where}{state}")
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "user", help="users, roles and their communities")
    roles = [r.value for r in Role]

    create = subcommand(sub, "create", _create, "name", help="create a user")
    create.add_argument("--role", choices=roles, required=True)
    create.add_argument("--community", action="append", help="repeat for several")
    create.add_argument("--all-communities", action="store_true", help="present and future")

    subcommand(sub, "list", _list, help="users and their scope")

    update = subcommand(
        sub, "update", _update, "name", help="change role or communities, disable or enable"
    )
    update.add_argument("--role", choices=roles)
    update.add_argument(
        "--community", action="append", help="the full new list (repeat for several)"
    )
    everywhere = update.add_mutually_exclusive_group()
    everywhere.add_argument(
        "--all-communities", dest="all_communities", action="store_true", default=None
    )
    everywhere.add_argument("--listed-communities", dest="all_communities", action="store_false")
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", dest="disabled", action="store_true", default=None)
    state.add_argument("--enable", dest="disabled", action="store_false")
