"""Reading a Pulumi stack file (`stacks/Pulumi.<stack>.yaml`) into a StackSpec.

The stack's settings live under `config:` as `aks-model-serving:<key>` entries; everything
else there (e.g. `azure-native:location`) belongs to providers. Every problem comes back as a
`path.to.field: message` line, never a traceback, and nothing is declared until all are gone.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from components.spec import SECURE, StackSpec

PROJECT = "aks-model-serving"


class StackError(Exception):
    """The stack cannot be used; `problems` holds one `path: message` line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Stack:
    name: str
    path: Path
    project_dir: Path
    spec: StackSpec
    provider_config: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str | None:
        ws = self.spec.workspace
        return (ws.location if ws else None) or self.provider_config.get("azure-native:location")

    def resolve(self, path: str) -> Path:
        """Paths in a stack are relative to the project, as the Pulumi program runs there."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.project_dir / p


def project_dir_of(path: Path) -> Path:
    """The folder holding Pulumi.yaml above the stack file, else the stack file's folder."""
    for folder in path.resolve().parents:
        if (folder / "Pulumi.yaml").exists():
            return folder
    return path.resolve().parent


# pydantic's names for union branches (`str | SecretStr` -> "str", "is-instance[SecretStr]"), validators and
# models: noise in a path, unless the input itself has that key.
_TYPE_TAGS = {"str", "int", "float", "bool", "bytes", "none", "list", "dict", "tuple", "set"}
# What the spec's name patterns allow, in words.
_PATTERNS = {
    r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$": "3-32 lowercase letters, digits or '-', starting with a letter, not ending with '-'",
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$": "1-63 lowercase letters, digits or '-', not starting or ending with '-'",
    r"^[a-z][a-z0-9]{0,11}$": "1-12 lowercase letters or digits, starting with a letter",
    r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$": "3-63 lowercase letters, digits or '-', starting with a letter, not ending with '-'",
    r"^[A-Za-z0-9]{5,50}$": "5-50 letters or digits",
    r"^[a-z0-9]{3,24}$": "3-24 lowercase letters or digits",
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,61}[A-Za-z0-9]$": "2-63 letters, digits, '_' or '-', starting and ending with a letter or digit",
    r"^[A-Za-z0-9][A-Za-z0-9_-]{2,32}$": "3-33 letters, digits, '_' or '-', starting with a letter or digit",
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$": "1-255 letters, digits, '.', '_' or '-', starting with a letter or digit",
}
# Errors whose message is clearer with the value that was given (never where the value may be a secret).
_SHOW_INPUT = {"string_pattern_mismatch", "float_parsing", "int_parsing", "bool_parsing", "int_from_float", "enum",
               "literal_error", "float_type", "int_type", "bool_type", "string_type"}
_MAY_BE_SECRET = re.compile(r"key|secret|password|token|cert|sas|connection|environment_variables", re.I)


def _loc(parts: tuple[Any, ...], data: Any) -> str:
    """The path of an error in the user's words: walked along the input, so that keys of the user's own
    (a variable's name, a misspelt setting) are kept as written and pydantic's own names are left out."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            data = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            continue
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif "[" in part or part in _TYPE_TAGS or not re.match(r"^[a-z_][a-z0-9_]*$", part):
            continue
        else:  # a field the input lacks (missing, or one an Azure ML file gave)
            data = None
        out += f".{part}" if out else part
    return out


def format_errors(exc: ValidationError, data: Any = None) -> list[str]:
    """`path.to.field: message` for each problem; a cross-field rule names its own field. `data`: the input
    that was validated (for paths in the user's own keys)."""
    lines: list[str] = []
    for err in exc.errors():
        where = _loc(err["loc"], data)
        if in_file := (err.get("ctx") or {}).get("in_file"):  # a value an Azure ML file gave (azureml.in_files)
            where = f"{where}: {in_file}"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling against the documented settings)"
        elif isinstance(value, SecretStr):
            msg = _SECRET_HERE
        elif value is None and err["type"] != "missing":
            msg = f"{msg} (given: no value)"  # `key:` with nothing after it
        elif err["type"] in _SHOW_INPUT and isinstance(value, str | int | float) and not _MAY_BE_SECRET.search(where):
            pattern = (err.get("ctx") or {}).get("pattern")
            if pattern in _PATTERNS:
                msg = f"{value!r} is not allowed: {_PATTERNS[pattern]}"
            else:
                msg = f"{msg} (given: {value!r})"
        for line in msg.splitlines():
            lines.append(_join(where, line))
    return list(dict.fromkeys(lines))  # each branch of a union (`str | SecretStr`) tells the same


def _join(where: str, line: str) -> str:
    field_, sep, rest = line.partition(": ")
    if sep and re.match(r"^[A-Za-z_][\w.\[\]]*$", field_):
        return f"{where}.{field_}: {rest}" if where else f"{field_}: {rest}"
    return f"{where}: {line}" if where else line


ConfigPath = tuple[str | int, ...]
_SECRET_HERE = "a secret (secure:) cannot go here: this setting is not kept secret, give it in clear"


def _unsecure(value: Any) -> Any:
    """Pulumi `secure:` values are ciphertext here: a secret marker stands in, so specs still validate."""
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return SecretStr(SECURE)
        return {k: _unsecure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unsecure(v) for v in value]
    return value


def secure_paths(config: dict[str, Any]) -> list[ConfigPath]:
    """Where a stack file's `config:` holds `secure:` values of ours, as (setting, field or index, ...) paths.

    The program gets them decrypted from Pulumi, which marks secret only a whole setting: these paths
    say which of its values are secrets, so that they stay secrets (SecretStr) down to the resources."""
    found: list[ConfigPath] = []

    def walk(value: Any, path: ConfigPath) -> None:
        if isinstance(value, dict):
            if set(value) == {"secure"}:
                found.append(path)
            else:
                for k, v in value.items():
                    walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))

    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if namespace == PROJECT:
            walk(value, (name,))
    return found


def _as_secrets(ours: dict[str, Any], paths: Sequence[ConfigPath]) -> list[str]:
    """Each decrypted text at `paths` becomes a SecretStr (a path the config no longer has is skipped).
    A secret that decrypts to an object or list (a whole setting made secret) is a problem, as `check`,
    which cannot decrypt it, finds it too."""
    problems = []
    for path in paths:
        parent: Any = ours
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                break
        else:
            last = path[-1]
            try:
                value = parent[last]
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(value, str):
                parent[last] = SecretStr(value)
            else:
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
                problems.append(f"{where}: {_SECRET_HERE}")
    return problems


def _structured(value: Any) -> Any:
    """`pulumi new` and `pulumi config set` store an object as its JSON text; read it back."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def parse_config(config: dict[str, Any], base_dir: Path,
                 secrets: Sequence[ConfigPath] = ()) -> tuple[StackSpec, dict[str, Any]]:
    """Validate the `config:` mapping of a stack (also what `pulumi.Config` hands the program, decrypted:
    `secrets` then says where its secrets are, see `secure_paths`)."""
    ours: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    problems = []
    for key, value in config.items():
        namespace, sep, name = str(key).partition(":")
        if not sep:
            problems.append(f"config.{key}: keys are namespaced, e.g. {PROJECT}:{key}")
        elif namespace == PROJECT and value in (None, "") and name in StackSpec.model_fields:
            continue  # `key:` with no value (YAML's null, which Pulumi hands the program as ""): not set
        elif namespace == PROJECT:
            ours[name] = _unsecure(_structured(value))
        elif difflib.get_close_matches(namespace, [PROJECT], cutoff=0.8):  # a provider's would be dropped unread
            problems.append(f"config.{key}: unknown namespace {namespace}; did you mean {PROJECT}:{name}?")
        else:
            providers[str(key)] = value
    if problems:
        raise StackError(problems)
    problems = _as_secrets(ours, secrets)
    if problems:
        raise StackError(problems)
    try:
        spec = StackSpec.model_validate(ours, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise StackError(format_errors(exc, ours)) from None
    if not ours:
        spec.warnings.append(f"no {PROJECT}: settings; this stack declares no cluster and nothing to serve "
                             "(stacks/Pulumi.dev.yaml shows what a stack declares)")
    return spec, providers


def load_stack(path: str | Path) -> Stack:
    path = Path(path)
    if not path.is_file():
        raise StackError([f"{path}: no such stack file (stacks live in stacks/Pulumi.<stack>.yaml)"])
    try:
        doc = yaml.safe_load(path.read_text())
    except UnicodeDecodeError as exc:
        raise StackError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise StackError([f"{path}: not valid YAML{where}: {problem}"]) from None
    config = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance({} if config is None else config, dict):  # `config:` alone: null
        raise StackError([f"{path}: a stack file is a mapping with a config: mapping inside"])
    unknown = sorted(set(doc) - {"config", "encryptionsalt", "secretsprovider", "encryptedkey", "environment"})
    if unknown:
        raise StackError([f"{k}: unknown top-level key in a Pulumi stack file" for k in unknown])
    project_dir = project_dir_of(path)
    spec, providers = parse_config(config or {}, project_dir)
    name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    return Stack(name=name, path=path, project_dir=project_dir, spec=spec, provider_config=providers)
