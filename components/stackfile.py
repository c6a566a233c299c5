"""Reading a Pulumi stack file (`stacks/Pulumi.<stack>.yaml`) into a StackSpec.

The stack's settings live under `config:` as `aks-model-serving:<key>` entries; everything
else there (e.g. `azure-native:location`) belongs to providers. Every problem comes back as a
`path.to.field: message` line, never a traceback, and nothing is declared until all are gone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from components.documents import Misread, load_json, load_yaml, yaml_problem
from components.spec import SECURE, StackSpec
from components.validation import SECRET_HERE, close_to, format_errors, path_of

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


ConfigPath = tuple[str | int, ...]


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
                problems.append(f"{path_of(path, ours)}: {SECRET_HERE}")
    return problems


def _structured(value: Any) -> Any:
    """`pulumi new` and `pulumi config set` store an object as its JSON text; read it back (Misread
    where it holds a key twice, as the file's own YAML would; json.JSONDecodeError where it is not JSON: every
    setting is an object or a list, never text)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        return load_json(value)
    return value


def _not_namespaced(key: str, value: Any) -> str:
    """A key of config: without a namespace: our settings nested under the project (YAML's way to namespace,
    not Pulumi's), or one of ours written without it."""
    if key == PROJECT and isinstance(value, dict):
        return (f"config.{key}: settings are not nested under the project; write each as its own key of config:, "
                + ", ".join(f"{PROJECT}:{name}" for name in value))
    close = close_to(key, StackSpec.model_fields)
    if close:
        return f"config.{key}: keys are namespaced; did you mean {PROJECT}:{close}?"
    return f"config.{key}: keys are namespaced, e.g. {PROJECT}:{key}"


def _in_clear(ours: dict[str, Any]) -> list[str]:
    """The secrets a cluster stack gives in clear text (a str where a secret is a SecretStr, secure: or decrypted
    from it): service and endpoint keys and the TLS private key. Committed with the stack file, they are in
    every clone and in its history. The value is never shown. A local stack is spared: it serves on loopback
    only, and cannot decrypt secure: values."""
    if ours.get("cluster") is None:
        return []
    found = []
    for kind in ("services", "endpoints"):
        routes_ = ours.get(kind)
        for i, route in enumerate(routes_ if isinstance(routes_, list) else []):
            found += [f"{kind}[{i}].{key}" for key in ("primary_key", "secondary_key")
                      if isinstance(route, dict) and isinstance(route.get(key), str)]
    ssl = ours["cluster"].get("ssl") if isinstance(ours["cluster"], dict) else None
    if isinstance(ssl, dict) and isinstance(ssl.get("key"), str):
        found.append("cluster.ssl.key")
    return [f"{where}: a secret in clear text in the stack file; keep it as a Pulumi secret: pulumi config set "
            f"--secret --path '{PROJECT}:{where}' <value> (and replace it: the old one stays in the file's history)"
            for where in found]


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
            problems.append(_not_namespaced(str(key), value))
        elif namespace == PROJECT and value in (None, "") and name in StackSpec.model_fields:
            continue  # `key:` with no value (YAML's null, which Pulumi hands the program as ""): not set
        elif namespace == PROJECT:
            try:
                ours[name] = _unsecure(_structured(value))
            except Misread as exc:
                problems += [f"config.{key}{'' if problem.startswith('[') else '.'}{problem}" for problem in exc.problems]
            except json.JSONDecodeError as exc:  # its message quotes none of the text, which may hold a secret
                problems.append(f"config.{key}: JSON text (as pulumi config set stores an object) that is not JSON: "
                                f"line {exc.lineno}, column {exc.colno}: {exc.msg}")
        elif close_to(namespace, [PROJECT]):  # a provider's would be dropped unread
            problems.append(f"config.{key}: unknown namespace {namespace}; did you mean {PROJECT}:{name}?")
        else:
            providers[str(key)] = value
    if problems:
        raise StackError(problems)
    problems = _as_secrets(ours, secrets)
    if problems:
        raise StackError(problems)
    in_clear = _in_clear(ours)
    try:
        spec = StackSpec.model_validate(ours, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise StackError(format_errors(exc, ours, StackSpec) + in_clear) from None
    if in_clear:
        raise StackError(in_clear)
    if not ours:
        spec.warnings.append(f"no {PROJECT}: settings; this stack declares no cluster and nothing to serve "
                             "(stacks/Pulumi.dev.yaml shows what a stack declares)")
    return spec, providers


def load_stack(path: str | Path) -> Stack:
    path = Path(path)
    if not path.is_file():
        raise StackError([f"{path}: no such stack file (stacks live in stacks/Pulumi.<stack>.yaml)"])
    try:
        doc = load_yaml(path.read_text())
    except Misread as exc:
        raise StackError(exc.problems) from None
    except UnicodeDecodeError as exc:
        raise StackError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except yaml.YAMLError as exc:
        raise StackError([f"{path}: {yaml_problem(exc)}"]) from None
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
