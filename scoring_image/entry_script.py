"""Loading an Azure ML entry script and calling its `run()` in the form it was written for.

The forms, told apart once at load time so that a request pays nothing for the choice:
- raw: `run(raw_data)` gets the request body as a string;
- schema: `run(data)` decorated with inference_schema's `@input_schema`: the JSON body's keys
  are its arguments, turned into the declared types before run() (a value that does not fit is
  the client's fault, a 400, where the decorator would raise inside run(), a 500);
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
_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ScriptError(Exception):
    """The entry script cannot be served (missing file, no run(), import failed)."""


class BadInput(Exception):
    """The request does not fit the script's declared inputs: the client's fault (400)."""


@dataclass(frozen=True)
class SchemaInput:
    """One `@input_schema` of run(): how inference_schema turns an input's JSON into its declared type."""

    name: str
    param_type: Any
    convert: bool
    optional: bool


@dataclass(frozen=True)
class EntryScript:
    path: Path
    init: Callable[[], Any] | None
    run: Callable[..., Any]
    form: Form
    argument: str  # raw and rawhttp forms: the parameter the input (or the request) is passed as, by name
    wants_headers: bool
    # Schema form: the arguments run() accepts (other keys are left out), those it has a default for (passed at
    # it when left out, as Azure ML's server does; any other left out is a 400, not a 500), and its inputs'
    # declared types.
    parameters: frozenset[str]
    defaults: Mapping[str, Any]
    inputs: tuple[SchemaInput, ...]

    def call(self, payload: Any, headers: Mapping[str, str] | None) -> Any:
        """Run the script on a payload prepared by `prepare` (on the run thread: a schema input's conversion,
        done before run(), may be as heavy as run() itself; it raises BadInput on a value that does not fit)."""
        if self.form == "schema":
            payload = _deserialized(payload, self.inputs)
            if self.wants_headers:
                return self.run(**payload, request_headers=headers)
            return self.run(**payload)
        if self.wants_headers:
            return self.run(**{self.argument: payload, "request_headers": headers})
        return self.run(**{self.argument: payload})

    def prepare(self, body: bytes, parsed: Any) -> Any:
        """The argument for `call` from the body (and its JSON, when it was JSON)."""
        if self.form == "schema":
            if not isinstance(parsed, dict):
                raise BadInput("this service expects a JSON object whose keys are run()'s inputs")
            missing = self.parameters - parsed.keys() - self.defaults.keys()
            if missing:
                other = sorted(parsed.keys() - self.parameters)  # a misspelt input, most likely
                raise BadInput(f"missing input(s): {', '.join(sorted(missing))}"
                               + (f"; run() takes no {', '.join(other)}" if other else ""))
            # Other keys (a client's own fields) are left out, as Azure ML does. Those left out are passed at
            # their defaults, which the decorators convert (a decorator converting an input not passed fails).
            return {**self.defaults, **{k: v for k, v in parsed.items() if k in self.parameters}}
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

    # Azure ML's server passes every argument by name: it refuses at start what it could not pass.
    parameters = inspect.signature(run).parameters
    if any(p.kind not in _NAMED for p in parameters.values()):
        raise ScriptError(f"{path}: run() cannot take positional-only arguments, *args or **kwargs")
    wants_headers = "request_headers" in parameters
    argument = next((name for name in parameters if name != "request_headers"), None)
    if argument is None:
        raise ScriptError(f"{path}: run() takes no argument for its input"
                          + (" besides request_headers" if wants_headers else ""))
    if amlcompat.is_rawhttp(run):
        return EntryScript(path, init, run, "rawhttp", argument, wants_headers, frozenset(), {}, ())
    if _schema_decorated(run):
        undecorated = inspect.signature(inspect.unwrap(run)).parameters
        names = frozenset(undecorated) - {"request_headers"}
        defaults = {n: p.default for n, p in undecorated.items() if n in names and p.default is not p.empty}
        return EntryScript(path, init, run, "schema", argument, wants_headers, names, defaults, _schema_inputs(run))
    return EntryScript(path, init, run, "raw", argument, wants_headers, frozenset(), {}, ())


def _schema_decorated(run: Callable[..., Any]) -> bool:
    if "inference_schema" not in sys.modules:
        return False
    from inference_schema.schema_util import is_schema_decorated

    return bool(is_schema_decorated(run))


def _schema_inputs(run: Callable[..., Any]) -> tuple[SchemaInput, ...]:
    """run()'s `@input_schema`s, outermost first (the order they convert in).

    inference_schema keeps an input's parameter type only in its decorator's closure: read from there.
    """
    inputs = []
    func: Any = run
    while func is not None:
        wrapper = getattr(func, "_self_wrapper", None)  # a wrapt.FunctionWrapper's wrapper
        code = getattr(wrapper, "__code__", None)
        if code is not None and "param_type" in code.co_freevars:
            cells = dict(zip(code.co_freevars, (cell.cell_contents for cell in wrapper.__closure__)))
            inputs.append(SchemaInput(cells["param_name"], cells["param_type"], cells["convert_to_provided_type"],
                                      cells["optional"]))
        func = getattr(func, "__wrapped__", None)
    return tuple(inputs)


def _deserialized(parsed: dict[str, Any], inputs: tuple[SchemaInput, ...]) -> dict[str, Any]:
    """The inputs in their declared types, as the decorators would convert them inside run(); on the already
    converted values, the decorators' own pass finds nothing left to do."""
    from inference_schema.schema_decorators import _deserialize_input_argument

    for schema_input in inputs:
        name = schema_input.name
        if not schema_input.convert or (schema_input.optional and not parsed.get(name)):
            continue
        try:
            parsed[name] = _deserialize_input_argument(parsed[name], schema_input.param_type, name)
        except Exception as exc:  # whatever a parameter type raises, the value did not fit it
            raise BadInput(f"input {name!r} does not fit its schema: {exc}") from None
    return parsed
