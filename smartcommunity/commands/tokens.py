"""``smartcommunity token create|list|revoke``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

import psycopg

from api.auth import create_token, list_tokens, revoke_token
from core import schema
from core.errors import ConfigurationError
from core.settings import Settings
from smartcommunity.commands import SubParsers

__all__ = ["register"]


def _url() -> str:
    url = Settings().database_url
    if url is None:
        raise ConfigurationError("SC_DATABASE_URL is not set")
    schema.upgrade(url)
    return url


def _create(args: argparse.Namespace) -> int:
    expires = None
    if args.days:
        expires = datetime.now(UTC) + timedelta(days=args.days)
    with psycopg.connect(_url()) as conn:
        token = create_token(conn, args.name, expires)
    print(token)
    print("# shown once: only its hash is stored", file=sys.stderr)
    return 0


def _list(_args: argparse.Namespace) -> int:
    with psycopg.connect(_url()) as conn:
        tokens = list_tokens(conn)
    print(f"{'id':>4}  {'name':<24} {'created':<20} {'expires':<20} state")
    for t in tokens:
        state = "revoked" if t.revoked_at else "active"
        if t.expires_at and t.expires_at <= datetime.now(UTC) and not t.revoked_at:
            state = "expired"
        expires = t.expires_at.strftime("%Y-%m-%d %H:%M") if t.expires_at else "never"
        print(f"{t.id:>4}  {t.name:<24} {t.created_at:%Y-%m-%d %H:%M}     {expires:<20} {state}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    with psycopg.connect(_url()) as conn:
        done = revoke_token(conn, args.id)
    if not done:
        print(f"no active token with id {args.id}", file=sys.stderr)
        return 1
    print(f"revoked token {args.id}")
    return 0


def register(commands: SubParsers, _db: SubParsers) -> None:
    token = commands.add_parser("token", help="API bearer tokens")
    sub = token.add_subparsers(dest="token_cmd", required=True)
    create = sub.add_parser("create", help="create a token and print it once")
    create.add_argument("name", help="who or what uses it")
    create.add_argument("--days", type=int, default=0, help="expire after N days (0 = never)")
    create.set_defaults(func=_create)
    sub.add_parser("list", help="list tokens (never their secrets)").set_defaults(func=_list)
    revoke = sub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=_revoke)
