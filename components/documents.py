"""The YAML and JSON files a user writes, read so that what a reader would read otherwise than meant is refused.

YAML and JSON readers keep the last of two equal keys of one mapping without a word: a setting written
twice (two `aks-model-serving:services:` blocks in a stack, two `cpu` keys in a deploymentconfig.json) would
be dropped, the stack checked and planned without it. Pulumi's own reader refuses such a stack file, but
only at `pulumi up`. And YAML 1.1, PyYAML's, reads an integer with a leading zero (`count: 010`) as octal: 8.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import yaml

_TWICE = "written twice{lines}; only the last would be read and the other lost: keep one"
_OCTAL = re.compile(r"^([-+]?)0([0-7_]+)$")  # what YAML 1.1 resolves as an octal int
_INT = "tag:yaml.org,2002:int"


class Misread(ValueError):
    """One `path.to.key: ...` line per value a reader would take otherwise than written: a key written twice in
    one mapping, an octal number."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, refusing a mapping that holds a key twice and an integer YAML 1.1 reads as octal
    (yaml.YAMLError for text that is not YAML)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = list(_misread_in_yaml(node, "", set()))
        if problems:
            raise Misread(problems)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Why text is not YAML, and where, without PyYAML's quote of the line it stopped at: that line may hold a
    secret (a kubeconfig's token or key, an index url's password), and the message reaches logs."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"not valid YAML{where}: {getattr(exc, 'problem', None) or str(exc)}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _octal(node: yaml.ScalarNode, path: str) -> str | None:
    """`count: 010`, read as 8: what to write instead. Quoted, it is text; `0` alone is zero either way."""
    found = _OCTAL.match(node.value) if node.tag == _INT and node.style is None else None
    if found is None:
        return None
    sign, digits = ("-" if found.group(1) == "-" else ""), found.group(2).replace("_", "")
    octal, decimal = f"{sign}{int(digits, 8)}", f"{sign}{int(digits)}"
    meant = "" if octal == decimal else f" (or {octal}, if octal was meant)"
    return (f"{path}: {node.value} (line {node.start_mark.line + 1}) is an octal number to YAML 1.1 ({octal}); "
            f"write {decimal}, without the leading 0{meant}")


def _misread_in_yaml(node: yaml.Node, path: str, seen: set[int]) -> Iterator[str]:
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode) and (octal := _octal(node, path)):
        yield octal
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _misread_in_yaml(item, f"{path}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges
                continue
            where, line = _join(path, key.value), key.start_mark.line + 1
            if (key.tag, key.value) in lines:
                first = lines[(key.tag, key.value)]
                yield f"{where}: {_TWICE.format(lines=f' (lines {first} and {line})' if first != line else f' (line {line})')}"
            lines.setdefault((key.tag, key.value), line)
            yield from _misread_in_yaml(value, where, seen)


class _Object(dict):
    """A JSON object that remembers the keys it was given more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]):
        super().__init__(pairs)
        keys = [k for k, _ in pairs]
        self.twice = sorted({k for k in keys if keys.count(k) > 1}, key=keys.index)


def load_json(text: str) -> Any:
    """`json.loads`, refusing an object that holds a key twice (json.JSONDecodeError for text that is not JSON)."""
    data = json.loads(text, object_pairs_hook=_Object)
    problems = list(_twice_in_json(data, ""))
    if problems:
        raise Misread(problems)
    return data


def _twice_in_json(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _twice_in_json(item, f"{path}[{i}]")
    elif isinstance(value, _Object):
        yield from (f"{_join(path, key)}: {_TWICE.format(lines='')}" for key in value.twice)
        for key, item in value.items():
            yield from _twice_in_json(item, _join(path, key))
