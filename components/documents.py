"""The YAML and JSON files a user writes, read so that a key written twice is refused rather than lost.

YAML and JSON readers keep the last of two equal keys of one mapping without a word: a setting written
twice (two `aks-model-serving:services:` blocks in a stack, two `cpu` keys in a deploymentconfig.json) would
be dropped, the stack checked and planned without it. Pulumi's own reader refuses such a stack file, but
only at `pulumi up`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml

_TWICE = "written twice{lines}; only the last would be read and the other lost: keep one"


class KeyWrittenTwice(ValueError):
    """One `path.to.key: written twice ...` line per key written twice in one mapping."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, refusing a mapping that holds a key twice (yaml.YAMLError for text that is not YAML)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = list(_twice_in_yaml(node, "", set()))
        if problems:
            raise KeyWrittenTwice(problems)
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


def _twice_in_yaml(node: yaml.Node, path: str, seen: set[int]) -> Iterator[str]:
    if id(node) in seen:  # an alias of a node already walked
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _twice_in_yaml(item, f"{path}[{i}]", seen)
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
            yield from _twice_in_yaml(value, where, seen)


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
        raise KeyWrittenTwice(problems)
    return data


def _twice_in_json(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _twice_in_json(item, f"{path}[{i}]")
    elif isinstance(value, _Object):
        yield from (f"{_join(path, key)}: {_TWICE.format(lines='')}" for key in value.twice)
        for key, item in value.items():
            yield from _twice_in_json(item, _join(path, key))
