"""A small codec between the frozen dataclasses of ``broker.domain`` and plain JSON values.

Both store backends share it, so a record reads the same wherever it was written:

- fields come from ``dataclasses.fields`` and are resolved with their type hints;
- ``datetime`` <-> ISO 8601 text in UTC with a fixed width (``2024-05-01T09:30:00.000000+00:00``),
  so the strings also sort in time order;
- ``enum.Enum`` (the domain's ``StrEnum``) <-> its value;
- ``X | None`` accepts and produces ``None``; ``str``, ``int`` and ``bool`` pass through
  (``bool`` also accepts SQLite's 0/1).

Everything here is pure; ``encode``/``decode`` add the JSON text step for key-value stores.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = [
    "CodecError",
    "decode",
    "encode",
    "format_datetime",
    "from_dict",
    "parse_datetime",
    "to_dict",
]

T = TypeVar("T")


class CodecError(ValueError):
    """A stored value does not fit the field it is read into."""


def format_datetime(value: datetime) -> str:
    """Aware datetime -> fixed-width ISO 8601 text in UTC. Naive datetimes are refused."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise CodecError("naive datetime: the broker stores aware UTC times only")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_datetime(text: str) -> datetime:
    """ISO 8601 text -> aware UTC datetime (text without an offset is read as UTC)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass instance -> dict of JSON-ready values, one entry per field."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"expected a dataclass instance, got {type(obj).__name__}")
    return {f.name: _dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Dict (as made by ``to_dict``, or a database row) -> instance of the dataclass ``cls``.

    Missing keys take the field default; unknown keys are ignored, so a record written by a
    newer release that added a field still reads.
    """
    kwargs: dict[str, Any] = {}
    klass: Any = cls  # typeshed does not see classes as Hashable
    for name, hint in _hints(klass).items():
        if name in data:
            try:
                kwargs[name] = _load(hint, data[name])
            except (TypeError, ValueError) as exc:
                raise CodecError(f"{cls.__name__}.{name}: {exc}") from None
    return cls(**kwargs)


def encode(obj: Any) -> str:
    """Dataclass instance -> compact JSON text."""
    return json.dumps(to_dict(obj), separators=(",", ":"), ensure_ascii=False)


def decode(cls: type[T], text: str | bytes) -> T:
    """JSON text made by ``encode`` -> instance of ``cls``."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise CodecError(f"{cls.__name__}: expected a JSON object")
    return from_dict(cls, data)


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _dump(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _load(hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        args = get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise ValueError("null for a required value")
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        return _load(inner[0], value)
    if value is None:
        raise ValueError("null for a required value")
    if hint is datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if not isinstance(value, str):
            raise TypeError(f"expected ISO 8601 text, got {type(value).__name__}")
        return parse_datetime(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise TypeError(f"expected a boolean, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected text, got {type(value).__name__}")
    raise TypeError(f"unsupported field type {hint!r}")
