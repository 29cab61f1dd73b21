"""Persistence: the SQL that reads and writes the database, between ``core`` and the
services. So far the schema (``schema``: migrations) and the storage layout
(``layout``: the storage path's DDL, rollup refresh); the rest moves here next."""
