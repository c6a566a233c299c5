"""Loading an Azure ML entry script and calling its `run()` in the form it was written for.

The forms, told apart once at load time so that a request pays nothing for the choice:
- raw: `run(raw_data)` gets the request body as a string;
- schema: `run(data)` decorated with inference_schema's `@input_schema`: the JSON body's keys
  are its arguments, which the decorator turns into the declared types;
- rawhttp: `@rawhttp run(request)` gets an `AMLRequest` and may return an `AMLResponse`.
Raw and schema scripts that name a `request_headers` parameter also get the headers.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scoring_image import amlcompat

Form = Literal["raw", "schema", "rawhttp"]


class ScriptError(Exception):
    """The entry script cannot be served (missing file, no run(), import failed)."""


class BadInput(Exception):
    """The request does not fit the script's declared inputs: the client's fault (400)."""


@dataclass(frozen=True)
class EntryScript:
    path: Path
    init: Callable[[], Any] | None
    run: Callable[..., Any]
    form: Form
    wants_headers: bool
    # Schema form: the arguments run() accepts, so unknown keys are a 400, not a 500.
    parameters: frozenset[str]

    def call(self, payload: Any, headers: Mapping[str, str] | None) -> Any:
        """Run the script on a payload prepared by `prepare` (on the run thread)."""
        if self.form == "schema":
            if self.wants_headers:
                return self.run(**payload, request_headers=headers)
            return self.run(**payload)
        if self.wants_headers:
            return self.run(payload, request_headers=headers)
        return self.run(payload)

    def prepare(self, body: bytes, parsed: Any) -> Any:
        """The argument for `call` from the body (and its JSON, when it was JSON)."""
        if self.form == "schema":
            if not isinstance(parsed, dict):
                raise BadInput("this service expects a JSON object whose keys are run()'s inputs")
            unknown = parsed.keys() - self.parameters
            if unknown:
                raise BadInput(f"unknown input(s): {', '.join(sorted(unknown))}; expected: {', '.join(sorted(self.parameters))}")
            return parsed
        try:
            return body.decode()
        except UnicodeDecodeError as exc:
            raise BadInput(f"the body is not UTF-8 text: {exc}") from None


def load(path: Path) -> EntryScript:
    """Import the script as a module (its folder importable, as Azure ML does) and inspect run()."""
    if not path.is_file():
        raise ScriptError(f"entry script not found: {path}")
    amlcompat.install()
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)

    run = getattr(module, "run", None)
    if not callable(run):
        raise ScriptError(f"{path} defines no run() function")
    init = getattr(module, "init", None)
    if init is not None and not callable(init):
        raise ScriptError(f"{path}: init is not a function")

    if amlcompat.is_rawhttp(run):
        return EntryScript(path, init, run, "rawhttp", False, frozenset())
    parameters = inspect.signature(run).parameters
    wants_headers = "request_headers" in parameters
    if _schema_decorated(run):
        names = frozenset(_undecorated_parameters(run)) - {"request_headers"}
        return EntryScript(path, init, run, "schema", wants_headers, names)
    return EntryScript(path, init, run, "raw", wants_headers, frozenset())


def _schema_decorated(run: Callable[..., Any]) -> bool:
    if "inference_schema" not in sys.modules:
        return False
    from inference_schema.schema_util import is_schema_decorated

    return bool(is_schema_decorated(run))


def _undecorated_parameters(run: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(inspect.unwrap(run)).parameters)
