"""A pydantic ValidationError told as `path.to.field: message` lines in the user's own words.

One place for both kinds of file a user writes: a stack (components.stackfile) and Azure ML's
deploymentconfig.json / inferenceconfig.json (components.azureml), so that a problem in either is
named the same way: along the keys the user wrote, list items as `[0]`, without pydantic's names.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
from collections.abc import Collection, Sequence
from datetime import date
from typing import Any, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ModelWrapValidatorHandler, SecretStr, ValidationError, model_validator
from pydantic_core import InitErrorDetails

# pydantic's names for union branches (`str | SecretStr` -> "str", "is-instance[SecretStr]",
# `str | dict[str, list[str]]` -> "dict[str,list[str]]"), validators and models: noise in a path, unless
# the input itself has that key.
_TYPE_TAGS = {"str", "int", "float", "bool", "bytes", "none", "list", "dict", "tuple", "set"}
# A key as a file spells it: the stack's snake_case, Azure ML's camelCase (entryScript).
_KEY = re.compile(r"^[a-z_][A-Za-z0-9_]*$")
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
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$":
        "the name of a ClusterIssuer (a Kubernetes name: lowercase letters, digits, '-' and '.', starting and ending "
        "with a letter or digit)",
}
# Errors whose message is clearer with the value that was given (never where the value may be a secret).
_SHOW_INPUT = {"string_pattern_mismatch", "float_parsing", "int_parsing", "bool_parsing", "int_from_float", "enum",
               "literal_error", "float_type", "int_type", "bool_type", "string_type"}
# Also an Azure ML file's environmentVariables, whose values the stack's environment_variables may make secrets.
_MAY_BE_SECRET = re.compile(r"key|secret|password|token|cert|sas|connection|environment_?variables", re.I)
SECRET_HERE = "a secret (secure:) cannot go here: this setting is not kept secret, give it in clear"


def close_to(word: str, words: Collection[str]) -> str | None:
    """The one of `words` that `word` most likely misspells (a key, a namespace, a region), if any."""
    found = difflib.get_close_matches(word, list(words), n=1, cutoff=0.8)
    return found[0] if found else None


# A key that is a setting of this many places or more is told only as unknown: the list would not help.
_MOST_PLACES = 4


@functools.cache
def field_places(model: type[BaseModel]) -> dict[str, list[str]]:
    """Where in a file read by `model` each setting goes, as paths in the file's words (`cluster.node_pools[]`,
    "" at the top): a setting written one level off is then told where it belongs."""
    places: dict[str, list[str]] = {}

    def walk(cls: type[BaseModel], at: str, seen: tuple[type, ...]) -> None:
        for name, info in cls.model_fields.items():
            places.setdefault(name, []).append(at)
            for sub, suffix in _models_in(info.annotation):
                if sub not in seen:
                    walk(sub, f"{at}.{name}{suffix}" if at else f"{name}{suffix}", (*seen, sub))

    walk(model, "", (model,))
    return places


def _models_in(annotation: Any, suffix: str = "") -> list[tuple[type[BaseModel], str]]:
    """The models a field's type holds (through Optional, unions and lists), each with `[]` per list around it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, suffix)]
    origin = get_origin(annotation)
    if origin is list:
        return [m for arg in get_args(annotation) for m in _models_in(arg, suffix + "[]")]
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg, suffix)]
    return []


def path_of(parts: Sequence[Any], data: Any = None, root: str = "") -> str:
    """The path of an error in the user's words, below `root`: walked along the input `data`, so that keys of
    the user's own (a variable's name, a misspelt setting) are kept as written and pydantic's own names are
    left out. Without the input, only what reads as a key is kept."""
    out = root
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            data = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            continue
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif "[" in part or part in _TYPE_TAGS or not _KEY.match(part):
            continue
        else:  # a field the input lacks (missing, or one an Azure ML file gave)
            data = None
        out += f".{part}" if out else part
    return out


def format_errors(exc: ValidationError, data: Any = None, model: type[BaseModel] | None = None) -> list[str]:
    """`path.to.field: message` for each problem; a cross-field rule names its own field. `data`: the input
    that was validated (for paths in the user's own keys); `model`: what validated it from the top, for where
    an unknown key belongs."""
    lines: list[str] = []
    for err in exc.errors():
        where = path_of(err["loc"], data)
        if in_file := (err.get("ctx") or {}).get("in_file"):  # a value an Azure ML file gave (azureml.in_files)
            where = f"{where}: {in_file}"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "model_type":  # "a valid dictionary or instance of RouterSpec": a class the user never wrote
            msg = "Input should be a mapping of settings"
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            close = (err.get("ctx") or {}).get("did_you_mean")
            msg = f"unknown field; did you mean {close}?" if close else _unknown(err["loc"], model)
        elif isinstance(value, SecretStr):
            msg = SECRET_HERE
        elif value is None and err["type"] != "missing":
            msg = f"{msg} (given: no value)"  # `key:` with nothing after it
        elif err["type"] == "string_type" and isinstance(value, int | float | date):
            msg = _not_text(value, shown=not _MAY_BE_SECRET.search(where))
        elif err["type"] in _SHOW_INPUT and isinstance(value, str | int | float | date):
            pattern = (err.get("ctx") or {}).get("pattern")
            given = "" if _MAY_BE_SECRET.search(where) else _shown(value)
            if pattern in _PATTERNS:
                msg = f"{given or 'the value'} is not allowed: {_PATTERNS[pattern]}"
            elif given:
                msg = f"{msg} (given: {given})"
        for line in msg.splitlines():
            lines.append(_join(where, line))
    return list(dict.fromkeys(lines))  # each branch of a union (`str | SecretStr`) tells the same


def _unknown(loc: tuple[Any, ...], model: type[BaseModel] | None) -> str:
    """An unknown key, with where it belongs when it is a setting of another level (`model`'s places of it)."""
    key = loc[-1] if loc and isinstance(loc[-1], str) else None
    places = field_places(model).get(key, []) if model is not None and key is not None else []
    if 0 < len(places) < _MOST_PLACES:
        return f"unknown field here; it is a setting of {' or '.join(p or 'the top level' for p in places)}"
    return "unknown field (check its spelling against the documented settings)"


def _shown(value: str | int | float | date) -> str:
    return value.isoformat() if isinstance(value, date) else repr(value)


def _not_text(value: int | float | date, shown: bool) -> str:
    """A setting that takes text given a value YAML reads as another type (yes, 1.30, 2024-01-01 unquoted): the
    user wrote text, and the value pydantic names (True, 1.3, a date) is not what they wrote."""
    if isinstance(value, bool):
        kind, why = "a boolean", " (YAML reads yes, no, on and off unquoted as booleans)"
    elif isinstance(value, date):
        kind, why = "a date", " (YAML reads 2024-01-01 unquoted as a date)"
    else:
        kind, why = "a number", " (unquoted, 1.30 reads as the number 1.3)" if isinstance(value, float) else ""
    given = f" ({_shown(value)})" if shown else ""
    return f"{kind}{given} where text is expected; quote it{why}"


class KeysNamedClose(BaseModel):
    """Base of the models a user's file is read by: a key the model does not have is told with the key it is
    close to, as the file spells it (`num_replica: unknown field; did you mean num_replicas?`), where pydantic
    says only that it is not permitted; a key close to none (a setting of another level) stays unknown."""

    @model_validator(mode="wrap")
    @classmethod
    def _close_keys(cls, data: Any, handler: ModelWrapValidatorHandler[BaseModel]) -> BaseModel:
        try:
            return handler(data)
        except ValidationError as exc:
            raise _with_close_keys(exc, cls) from None


def _with_close_keys(exc: ValidationError, model: type[BaseModel]) -> ValidationError:
    """`exc` with each unknown key of `model`'s own (its `loc` one key long) given its close key (ctx
    `did_you_mean`, which format_errors tells)."""
    keys = [key for name, info in model.model_fields.items() for key in _spellings(name, info.alias, info.validation_alias)]
    errors, found = exc.errors(), False
    for err in errors:
        key = err["loc"][0] if err["type"] == "extra_forbidden" and len(err["loc"]) == 1 else None
        if isinstance(key, str) and (close := close_to(key, keys)):
            err["ctx"], found = {"did_you_mean": close}, True
    if not found:
        return exc
    details = []
    for err in errors:
        detail = InitErrorDetails(type=err["type"], loc=err["loc"], input=err["input"])
        if "ctx" in err:
            detail["ctx"] = err["ctx"]
        details.append(detail)
    return ValidationError.from_exception_data(exc.title, details)


def _spellings(name: str, alias: str | None, validation_alias: Any) -> list[str]:
    """How a file may spell a field: its alias (choices), as an Azure ML file's camelCase keys, else its name."""
    if isinstance(validation_alias, AliasChoices):
        return [c for c in validation_alias.choices if isinstance(c, str)]
    return [alias or name]


def _join(where: str, line: str) -> str:
    field_, sep, rest = line.partition(": ")
    if sep and re.match(r"^[A-Za-z_][\w.\[\]]*$", field_):
        return f"{where}.{field_}: {rest}" if where else f"{field_}: {rest}"
    return f"{where}: {line}" if where else line
