"""pyproject.toml reduced to the keys an image's build reads, written as canonical TOML.

An image's tag hashes its build context: with the whole pyproject.toml in it, a dev dependency, a pytest
option or the `infra` extra changed every image's tag, and so rolled every model pod on the next `up`.
The reduced file is what the tag hashes and what the image is built from, so nothing else can reach it.
Keys are written sorted (as the conda environment's YAML is), so that their order in the file does not
count either.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PYPROJECT = "pyproject.toml"  # at the top of the build context, where `pip install .` reads it


def reduced(path: Path, keys: Sequence[str]) -> bytes:
    """The TOML of `path` holding only `keys`, each dotted from the top (`project.optional-dependencies.scorer`)."""
    import tomli_w  # the infra extra's: `check` reads PYPROJECT's name here, from what `make local` installs

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
    return tomli_w.dumps(_sorted(selected)).encode()


def _sorted(value: Any) -> Any:
    """`value` with every table's keys sorted: tomli_w writes them in the order it is given."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value
