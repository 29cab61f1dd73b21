"""``smartcommunity token create|list|revoke``.

A token belongs to a user and carries its role and communities. ``token create
NAME`` alone makes a token of the built-in administrator (as before users
existed); ``--user`` names an existing user; ``--role`` (with ``--community``)
makes a user called NAME with that role for the token.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from core.access import Role
from smartcommunity.cli_support import connect
from smartcommunity.commands import SubParsers, command_group, subcommand
from smartcommunity.commands.users import create_as_asked, scoped
from store import accounts

__all__ = ["register"]


def _fail(message: str) -> int:
    print(f"smartcommunity token: {message}", file=sys.stderr)
    return 1


def _create(args: argparse.Namespace) -> int:
    expires = None
    if args.days:
        expires = datetime.now(UTC) + timedelta(days=args.days)
    with connect() as conn:
        user_id: int | None = None
        if args.user is not None:
            user = accounts.find_user(conn, args.user)
            if user is None:
                return _fail(f"no user {args.user!r} (smartcommunity user create)")
            user_id = user.id
        elif args.role is not None:
            if not scoped(args):
                return _fail(
                    "with --role, give --community (repeat for several) or --all-communities"
                )
            try:
                user_id = create_as_asked(conn, args.name, args).id
            except accounts.UserError as exc:
                return _fail(f"{exc}; use --user {args.name} for another token of theirs")
        try:
            token = accounts.create_token(conn, args.name, expires, user_id=user_id)
        except ValueError as exc:
            return _fail(str(exc))
    print(token)
    print("# shown once: only its hash is stored", file=sys.stderr)
    return 0


def _list(_args: argparse.Namespace) -> int:
    with connect() as conn:
        tokens = accounts.list_tokens(conn)
    print(f"{'id':>4}  {'name':<24} {'user':<16} {'created':<20} {'expires':<20} state")
    for t in tokens:
        state = "revoked" if t.revoked_at else "active"
        if t.expires_at and t.expires_at <= datetime.now(UTC) and not t.revoked_at:
            state = "expired"
        expires = t.expires_at.strftime("%Y-%m-%d %H:%M") if t.expires_at else "never"
        print(
            f"{t.id:>4}  {t.name:<24} {t.user_name:<16} {t.created_at:%Y-%m-%d %H:%M}     "
            f"{expires:<20} {state}"
        )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with connect() as conn:
        done = accounts.revoke_token(conn, args.id)
    if not done:
        print(f"no active token with id {args.id}", file=sys.stderr)
        return 1
    print(f"revoked token {args.id}")
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    sub = command_group(commands, "token", help="API bearer tokens")
    create = subcommand(sub, "create", _create, help="create a token and print it once")
    create.add_argument("name", help="who or what uses it")
    create.add_argument("--days", type=int, default=0, help="expire after N days (0 = never)")
    owner = create.add_mutually_exclusive_group()
    owner.add_argument("--user", help="an existing user (default: the built-in admin)")
    owner.add_argument(
        "--role", choices=[r.value for r in Role], help="make a user called NAME with this role"
    )
    create.add_argument("--community", action="append", help="with --role; repeat for several")
    create.add_argument("--all-communities", action="store_true", help="with --role")
    subcommand(sub, "list", _list, help="list tokens (never their secrets)")
    revoke = subcommand(sub, "revoke", _revoke, help="revoke a token by id")
    revoke.add_argument("id", type=int)
