"""Launcher: the command line, the demo and the embedded servers.

This is the composition root, the one package that may import every other.
"""
