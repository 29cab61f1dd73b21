"""Sub-commands that each area of the platform adds to ``smartcommunity``.

Each module here has ``register(commands, db)``: ``commands`` is the top-level
sub-parser set, ``db`` the one under ``smartcommunity db``. A command is added
with ``subcommand`` (its handler set as ``func``, which returns an exit status), a
command of several actions with ``command_group``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

__all__ = ["MODULES", "command_group", "register_all", "subcommand"]

MODULES = (
    "smartcommunity.commands.tokens",
    "smartcommunity.commands.storage",
    "smartcommunity.commands.rules",
    "smartcommunity.commands.scenario",
    "smartcommunity.commands.communities",
    "smartcommunity.commands.devices",
    "smartcommunity.commands.users",
    "smartcommunity.commands.broker",
    "smartcommunity.commands.visits",
    "smartcommunity.commands.report",
    "smartcommunity.commands.dead_letters",
    "smartcommunity.commands.decoders",
    "smartcommunity.commands.fire_bridge",
    "smartcommunity.commands.incidents",
)

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:  # not subscriptable at run time
    SubParsers = argparse._SubParsersAction


def register_all(commands: SubParsers, db: SubParsers) -> None:
    for name in MODULES:
        importlib.import_module(name).register(commands, db)


def command_group(
    commands: SubParsers, name: str, *, help: str, dest: str | None = None
) -> SubParsers:
    """A command made of sub-commands (``smartcommunity NAME ACTION``, one ACTION
    required, named ``dest`` in argparse's messages: ``NAME_cmd`` unless given): the
    set to add them to."""
    group = commands.add_parser(name, help=help)
    return group.add_subparsers(dest=dest or f"{name}_cmd", required=True)


def subcommand(
    group: SubParsers,
    name: str,
    func: Callable[[argparse.Namespace], int],
    *positionals: str,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A sub-command that runs ``func``, taking the plain positional arguments
    ``positionals``; ``kwargs`` go to ``add_parser`` (``help``). Options are added
    to the parser returned."""
    parser = group.add_parser(name, **kwargs)
    for positional in positionals:
        parser.add_argument(positional)
    parser.set_defaults(func=func)
    return parser
