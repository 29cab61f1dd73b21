"""Rule files: the shipped default pack (``alerts/defaults/*.yaml``) and files users apply."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from core.errors import ConfigurationError
from core.rules import Rule, parse_rules

__all__ = ["DEFAULTS_DIR", "default_rules", "load_rules"]

DEFAULTS_DIR = Path(__file__).with_name("defaults")


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    return [path]


def load_rules(*paths: Path) -> list[Rule]:
    """Rules from YAML (or JSON) files or folders of them; an error names file and field."""
    rules: list[Rule] = []
    seen: dict[str, Path] = {}
    for path in paths:
        for file in _files(path):
            try:
                data = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigurationError(f"{file}: {exc}") from exc
            try:
                found = parse_rules(data)
            except ValidationError as exc:
                raise ConfigurationError(f"{file}: {_describe(exc)}") from exc
            for rule in found:
                if rule.id in seen:
                    raise ConfigurationError(f"{file}: rule {rule.id!r} also in {seen[rule.id]}")
                seen[rule.id] = file
                rules.append(rule)
    return rules


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def default_rules() -> list[Rule]:
    """The default pack for the four device classes."""
    return load_rules(DEFAULTS_DIR)
