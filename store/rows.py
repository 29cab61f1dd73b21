"""The connections every store function takes: one spelling of their types for the
whole package, synchronous (the API, the CLI, the pipeline's threads) and asynchronous
(the fire-panel bridge)."""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["AsyncConn", "Conn"]

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]
