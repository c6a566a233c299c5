"""Azure ML's entry-script API, on Werkzeug without Flask and without azureml-core.

Existing entry scripts import `rawhttp`, `AMLRequest` and `AMLResponse` from
`azureml_inference_server_http.api.aml_request|aml_response` or from the older
`azureml.contrib.services.aml_request|aml_response`, and many find their model in init() with
`azureml.core.model.Model.get_model_path`; some collect model data with `azureml.monitoring.ModelDataCollector`
(collection.modeldatacollector).  `install()` registers these modules under those names, so such scripts run
unchanged and the image needs neither Flask, azureml-core nor azureml-monitoring.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import werkzeug.datastructures
import werkzeug.wrappers

from scoring_image.collection import modeldatacollector

_ALIASES = (
    "azureml_inference_server_http.api.aml_request",
    "azureml_inference_server_http.api.aml_response",
    "azureml.contrib.services.aml_request",
    "azureml.contrib.services.aml_response",
)
# Where a script finds `Model`; registered only where azureml-core is not installed (where it is, its own
# resolves under $AML_APP_ROOT/azureml-models, which is where the cluster's models are).
_MODEL_ALIASES = ("azureml.core", "azureml.core.model")
# Where a script finds `ModelDataCollector`; registered only where azureml-monitoring is not installed.
_MONITORING_ALIAS = "azureml.monitoring"

_RAWHTTP_ATTR = "__aml_rawhttp__"
_HTML = "text/html; charset=utf-8"  # Flask's Response's default, and so an AMLResponse's


def rawhttp(func: Callable[..., Any]) -> Callable[..., Any]:
    """Marks `run(request)` as wanting the whole request (an `AMLRequest`) instead of its body."""
    setattr(func, _RAWHTTP_ATTR, True)
    return func


def is_rawhttp(func: Callable[..., Any]) -> bool:
    return bool(getattr(func, _RAWHTTP_ATTR, False))


class Headers(dict[str, str]):
    """What Azure ML hands `run(data, request_headers)`: `dict(request.headers)`, names in Werkzeug's
    canonical case ("X-Tenant"), with lookups that also ignore case (scripts ask for "x-tenant" too)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        joined: dict[str, str] = {}
        for k, v in raw:
            name, value = _canonical(k.decode("latin-1")), v.decode("latin-1")
            # Repeated: joined with commas, as the WSGI server under Azure ML's Flask hands them over.
            joined[name] = f"{joined[name]},{value}" if name in joined else value
        super().__init__(joined)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(_canonical(key), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(_canonical(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(_canonical(key))

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        return super().pop(_canonical(key), *default)


def _canonical(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


class AMLRequest(werkzeug.wrappers.Request):
    """What a @rawhttp run() gets: a Werkzeug request, as Azure ML's (Flask's Request is Werkzeug's with
    Flask's app context on top): args, form, files, get_json, headers, url and the rest."""

    @classmethod
    def of(cls, scope: dict[str, Any], body: bytes) -> AMLRequest:
        """The request of an ASGI scope whose body was read."""
        server = scope.get("server") or ("127.0.0.1", 80)
        environ = {
            "REQUEST_METHOD": scope["method"], "SCRIPT_NAME": "", "PATH_INFO": scope["path"],
            "QUERY_STRING": scope["query_string"].decode("latin-1"), "SERVER_NAME": server[0],
            "SERVER_PORT": str(server[1]), "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
            "REMOTE_ADDR": (scope.get("client") or ("", 0))[0], "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": scope.get("scheme", "http"), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
            # The body is whole: Werkzeug reads one whose request says Transfer-Encoding: chunked (the router
            # forwards a body over 1 MiB so) as empty unless its input is marked terminated, as gunicorn does.
            "wsgi.input_terminated": True,
        }
        for name, value in scope["headers"]:
            key, text = name.decode("latin-1").upper().replace("-", "_"), value.decode("latin-1")
            if key == "CONTENT_LENGTH":
                continue  # the body's own, above (a chunked body has none)
            if key != "CONTENT_TYPE":
                key = f"HTTP_{key}"
            environ[key] = f"{environ[key]},{text}" if key in environ else text  # repeated: joined, as WSGI does
        return cls(environ)


class AMLResponse:
    """A response `run()` returns to choose its own body, status and headers. `headers` are Werkzeug's Headers, as
    those of Azure ML's AMLResponse (a Flask Response): names that ignore case, `add`, `set`, `extend` and a name
    repeated, as scripts written for it use them (`resp.headers["Access-Control-Allow-Origin"] = "*"`). They are
    made when a script asks for them: most never do, and Headers cost several microseconds where the mapping
    given is sent as it is."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ) -> None:
        self.status_code = status_code
        self.run_function_failed = run_function_failed  # sent as x-ms-run-function-failed (a 5xx is one anyway)
        given = response_headers or {}
        self._headers: Mapping[str, Any] = given
        if message is None:  # an empty JSON object, as Azure ML's AMLResponse answers None
            self.body = b"{}"
            content_type = "application/json"
        elif json_str:
            try:
                self.body = orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)  # json.dumps writes {0: ..} as {"0": ..}
            except TypeError:  # what only Python's json writes (an int over 64 bits), as Azure ML writes it
                self.body = json.dumps(message).encode()
            content_type = "application/json"
        else:
            self.body = _body(message)
            content_type = _HTML
        # Added where the script's own headers name none, in whatever case.
        self._content_type = None if any(name.lower() == "content-type" for name in given) else content_type

    @property
    def headers(self) -> werkzeug.datastructures.Headers:
        if not isinstance(self._headers, werkzeug.datastructures.Headers):
            headers = werkzeug.datastructures.Headers(self._headers)
            if self._content_type is not None:
                headers.add("Content-Type", self._content_type)
            self._headers, self._content_type = headers, None
        return self._headers

    @headers.setter
    def headers(self, headers: Mapping[str, Any]) -> None:  # replaced whole, Content-Type and all
        self._headers, self._content_type = headers, None

    def header_items(self) -> list[tuple[Any, Any]]:
        """The headers as sent (name, value), repeated names included."""
        items = list(self._headers.items())
        if self._content_type is not None:
            items.append(("Content-Type", self._content_type))
        return items


def _body(message: Any) -> bytes:
    """A message as Flask's Response sends it: text as UTF-8, bytes-like as it is, and an iterable (a generator
    a script streams its answer from, a list of parts) as its parts joined, read here in full. What Flask
    cannot send (a number, a mapping, whose keys it would send) is sent as its text."""
    if isinstance(message, (str, bytes, bytearray, memoryview)):
        return _part(message)
    if isinstance(message, Iterable) and not isinstance(message, Mapping):
        return b"".join(map(_part, message))
    return str(message).encode()


def _part(part: Any) -> bytes:
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, (bytes, bytearray, memoryview)):
        return bytes(part)
    raise TypeError(f"an AMLResponse's parts are text or bytes, not {type(part).__name__}")  # as Flask refuses them


class ModelNotFoundException(Exception):
    """The model asked for is not deployed with this service (azureml-core's name for it)."""


class Model:
    """azureml-core's Model, as far as an entry script in a deployed service uses it."""

    @staticmethod
    def get_model_path(model_name: str, version: int | None = None, _workspace: Any = None) -> str:
        """The path of a deployed model, resolved as azureml-core resolves it in a service: under the models'
        root, `<name>/<version>/` (version None: the highest), the one file or folder there; else a file or
        folder of that name in the working directory. The root is AZUREML_MODEL_DIR, or with one model (where
        AZUREML_MODEL_DIR is `<root>/<name>/<version>`) two levels up.

        A version folder of several entries is the model itself: Azure ML keeps a model registered from a folder
        in one folder under its version, where this image copies the folder's files into the version folder.
        `_workspace` (a download from the workspace) has no meaning inside a service and is ignored."""
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ValueError(f"version should be an int, not {version!r}")
        root = _models_root(model_name)
        versions = root / model_name
        if versions.is_dir():
            chosen = version if version is not None else max(
                (int(v.name) for v in versions.iterdir() if v.name.isdigit()), default=None)
            folder = versions / str(chosen)
            if chosen is not None and folder.is_dir():
                entries = list(folder.iterdir())
                return str(entries[0] if len(entries) == 1 else folder)
        if os.path.exists(model_name):
            return model_name
        raise ModelNotFoundException(
            f"model {model_name!r}{'' if version is None else f' version {version}'} is not deployed with this "
            f"service: no {versions}/{'<version>' if version is None else version}/ and no ./{model_name}")


def _models_root(model_name: str) -> Path:
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:  # azureml-core's own root
        return Path(os.environ.get("AML_APP_ROOT", "")) / "azureml-models"
    path = Path(model_dir)
    return path.parent.parent if path.parent.name == model_name else path


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def install() -> None:
    """Make the Azure ML module names resolve to this module (and to the ModelDataCollector's).

    Missing parent packages become empty ones; an installed `azureml` package stays usable.
    """
    me = sys.modules[__name__]
    aliases = [(alias, me) for alias in _ALIASES]
    if not _importable("azureml.core"):
        aliases += [(alias, me) for alias in _MODEL_ALIASES]
    if not _importable(_MONITORING_ALIAS):  # before a stand-in `azureml` above hides an installed one
        aliases.append((_MONITORING_ALIAS, modeldatacollector))
    for alias, module in aliases:
        parts = alias.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules and not _importable(parent):
                package = types.ModuleType(parent)
                package.__path__ = []
                sys.modules[parent] = package
        sys.modules[alias] = module
        # `import a.b.c` binds `a` and finds the rest by attribute, as an import would have set them.
        for i in range(1, len(parts)):
            parent, child = sys.modules.get(".".join(parts[:i])), sys.modules.get(".".join(parts[: i + 1]))
            if parent is not None and child is not None and not hasattr(parent, parts[i]):
                setattr(parent, parts[i], child)
