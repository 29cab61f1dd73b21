"""``smartcommunity dead-letters list|replay``: what the pipeline refused, and a
second chance for it after a fix (a registered device, a widened range, a
corrected bug)."""

from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Sequence

from core.decode import Limits
from gateway.decoders import load_profiles
from gateway.replay import ReplayResult, Selection, replay
from smartcommunity.cli_support import aware_time, connect, database_url, keywords, print_table
from smartcommunity.cli_support import settings as cli_settings
from smartcommunity.commands import SubParsers, subcommand
from store.dead_letters import list_dead_letters

__all__ = ["register"]

# Detail shown in the table; --json has it whole.
_DETAIL_CHARS = 60
# The options (_selection_arguments) that choose the dead letters list and replay
# work on, named as list_dead_letters and Selection name their parameters.
_SELECTION = ("reason", "device", "since", "until", "limit")


def _list(args: argparse.Namespace) -> int:
    with connect() as conn:
        rows = list_dead_letters(conn, None, **keywords(args, _SELECTION))
    if args.json:
        for row in rows:
            record = {
                "id": row.id,
                "received_at": row.received_at.isoformat(),
                "reason": row.reason,
                "topic": row.topic,
                "payload_size": row.size,
                "truncated": row.truncated,
                "replay_outcome": row.replay_outcome,
                "detail": row.detail,
            }
            print(json.dumps(record, ensure_ascii=False))
        return 0
    print_table(
        ("id", "received_at", "reason", "topic", "bytes", "replayed", "detail"),
        (
            (
                row.id,
                f"{row.received_at:%Y-%m-%d %H:%M:%S%z}",
                row.reason,
                row.topic,
                f"{row.size}{' (truncated)' if row.truncated else ''}",
                row.replay_outcome or "",
                row.detail[:_DETAIL_CHARS],
            )
            for row in rows
        ),
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    settings = cli_settings()
    url = database_url()
    limits = Limits(
        max_payload_bytes=settings.validation.max_payload_bytes,
        max_future_s=settings.validation.max_future_s,
    )
    selection = Selection(**keywords(args, _SELECTION), again=args.again)

    def show(result: ReplayResult) -> None:
        why = f" {result.reason}:" if result.reason else ""
        print(f"{result.dead_letter_id}  {result.outcome}{why} {result.detail}  {result.topic}")

    results = replay(
        url,
        selection,
        limits=limits,
        worker=f"replay@{socket.gethostname()}:{os.getpid()}",
        dry_run=args.dry_run,
        progress=show,
        # Alink and vendor JSON dead letters go back through their profiles.
        decoders=load_profiles(settings.decoders.profiles) if settings.decoders.profiles else None,
    )
    _summary(results, dry_run=args.dry_run)
    return 0


def _summary(results: Sequence[ReplayResult], *, dry_run: bool) -> None:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    text = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing"
    print(f"replayed {len(results)} dead letter(s): {text}{' (dry run)' if dry_run else ''}")


def _selection_arguments(parser: argparse.ArgumentParser, limit: int) -> None:
    parser.add_argument("--reason", help="e.g. unknown_device, internal_error, poison")
    parser.add_argument("--device", help="the device id in the topic")
    parser.add_argument(
        "--since", type=aware_time, help="received at or after (ISO 8601 with zone)"
    )
    parser.add_argument("--until", type=aware_time, help="received before (ISO 8601 with zone)")
    parser.add_argument("--limit", type=int, default=limit)


def register(commands: SubParsers, _db: SubParsers) -> None:
    dead = commands.add_parser(
        "dead-letters", help="messages the pipeline refused: list, replay"
    ).add_subparsers(dest="dead_cmd", required=True)

    listing = subcommand(dead, "list", _list, help="newest first, filtered by reason, device, time")
    _selection_arguments(listing, limit=50)
    listing.add_argument("--json", action="store_true", help="one JSON object a line")

    again = subcommand(
        dead,
        "replay",
        _replay,
        help="run selected dead letters through the pipeline again (oldest first); "
        "each result is recorded",
    )
    _selection_arguments(again, limit=10_000)
    again.add_argument("--again", action="store_true", help="also those a replay already stored")
    again.add_argument("--dry-run", action="store_true", help="say what would happen only")
