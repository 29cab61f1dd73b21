"""One record built from others that share its field names.

Reports and views restate what a record already holds (a device's battery, a
month's acknowledgement times) under the same names; ``project`` copies those
fields by name, so a constructor call spells out only what differs: a renamed
field, a computed one, a converted type.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from pydantic import BaseModel

__all__ = ["project"]

T = TypeVar("T")


def _field_names(target: type[Any]) -> list[str]:
    if issubclass(target, BaseModel):
        return list(target.model_fields)
    return [field.name for field in dataclasses.fields(target)]


def project(target: type[T], *sources: object, **values: Any) -> T:
    """A ``target`` (a dataclass or a pydantic model) whose fields come, by name, from the
    attributes of ``sources`` (a later source over an earlier one), then from ``values``.

    A pydantic target reads nested records from their attributes too (a dataclass
    where the model has a nested model), as ``model_validate(..., from_attributes=True)``.
    """
    data: dict[str, Any] = {}
    for name in _field_names(target):
        for source in sources:
            if hasattr(source, name):
                data[name] = getattr(source, name)
    data.update(values)
    if issubclass(target, BaseModel):
        return cast(T, target.model_validate(data, from_attributes=True))
    return target(**data)
