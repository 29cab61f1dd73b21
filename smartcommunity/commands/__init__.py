"""Sub-commands that each area of the platform adds to ``smartcommunity``.

Each module here has ``register(commands, db)``: ``commands`` is the top-level
sub-parser set, ``db`` the one under ``smartcommunity db``. Handlers are set
with ``set_defaults(func=...)`` and return an exit status.
"""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

__all__ = ["MODULES", "register_all"]

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
