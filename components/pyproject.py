"""pyproject.toml reduced to the keys an image's build reads, written as canonical TOML.

An image's tag hashes its build context: with the whole pyproject.toml in it, a dev dependency, a pytest
option or the `infra` extra changed every image's tag, and so rolled every model pod on the next `up`.
The reduced file is what the tag hashes and what the image is built from, so nothing else can reach it.
Keys are written sorted (as the conda environment's YAML is), so that their order in the file does not
count either. No TOML writer is among the project's dependencies; pyproject's values need little of one.
"""

from __future__ import annotations

import datetime
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PYPROJECT = "pyproject.toml"  # at the top of the build context, where `pip install .` reads it


def reduced(path: Path, keys: Sequence[str]) -> bytes:
    """The TOML of `path` holding only `keys`, each dotted from the top (`project.optional-dependencies.scorer`)."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not TOML ({exc})") from exc
    selected: dict[str, Any] = {}
    for key in keys:
        parts = key.split(".")
        value: Any = data
        for depth, part in enumerate(parts, 1):
            if not isinstance(value, dict) or part not in value:
                raise ValueError(f"{path}: no {'.'.join(parts[:depth])}, which the image's build reads ({key})")
            value = value[part]
        table = selected
        for part in parts[:-1]:
            table = table.setdefault(part, {})
        table[parts[-1]] = value
    return dumps(selected).encode()


def dumps(document: Mapping[str, Any]) -> str:
    """`document` as TOML that tomllib reads back equal: tables as [headers], keys sorted."""
    return "".join(_table(document, ()))


def _table(table: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    values = sorted(k for k, v in table.items() if not isinstance(v, Mapping))
    tables = sorted(k for k, v in table.items() if isinstance(v, Mapping))
    lines = []
    if path and (values or not tables):  # a table holding only tables is made by theirs; an empty one needs its own
        lines.append(f"[{'.'.join(_key(part) for part in path)}]\n")
    lines += [f"{_key(k)} = {_value(table[k])}\n" for k in values]
    for k in tables:
        lines += _table(table[k], (*path, k))
    return lines


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    """A basic string: TOML allows no raw control character (nor DEL) in one."""
    return '"' + "".join(_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else c) for c in text) + '"'


def _value(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is one
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):  # in an array (an array of tables, as [[tool.mypy.overrides]])
        return "{" + ", ".join(f"{_key(k)} = {_value(value[k])}" for k in sorted(value)) + "}"
    raise TypeError(f"no TOML for {type(value).__name__}")
