"""Persistence: the SQL that reads and writes the database, between ``core`` and the
services, one module per aggregate. Functions take a connection and return plain
records (dataclasses or core models), never the API's response models.
docs/architecture.md lists which module writes each table."""
