"""Shared kernel: settings, domain models, the device contract, errors and the schema.

Nothing here does I/O; every other package imports from here.
"""
