"""Azure ML's raw-HTTP entry-script API, without Flask.

Existing entry scripts import `rawhttp`, `AMLRequest` and `AMLResponse` from
`azureml_inference_server_http.api.aml_request|aml_response` or from the older
`azureml.contrib.services.aml_request|aml_response`.  `install()` registers this module
under those names, so such scripts run unchanged and the image needs no Flask.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

_ALIASES = (
    "azureml_inference_server_http.api.aml_request",
    "azureml_inference_server_http.api.aml_response",
    "azureml.contrib.services.aml_request",
    "azureml.contrib.services.aml_response",
)

_RAWHTTP_ATTR = "__aml_rawhttp__"


def rawhttp(func: Callable[..., Any]) -> Callable[..., Any]:
    """Marks `run(request)` as wanting the whole request (an `AMLRequest`) instead of its body."""
    setattr(func, _RAWHTTP_ATTR, True)
    return func


def is_rawhttp(func: Callable[..., Any]) -> bool:
    return bool(getattr(func, _RAWHTTP_ATTR, False))


class Headers(dict[str, str]):
    """Request headers with case-insensitive lookup, as Werkzeug's (what Azure ML hands `request.headers`
    and `run(data, request_headers)`: scripts ask for "X-Tenant" or "x-tenant" alike)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


class BadRequest(ValueError):
    """A request body the script asked to read as JSON is not JSON: the client's error (Flask's 400)."""


class _Args(dict):
    """The query string as Flask's `request.args` reads it: the first value of a key, `get` with a `type`,
    `getlist` for all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__()
        self._all: dict[str, list[str]] = {}
        for key, value in pairs:
            self.setdefault(key, value)
            self._all.setdefault(key, []).append(value)

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:  # noqa: A002
        if key not in self:
            return default
        try:
            return type(self[key]) if type is not None else self[key]
        except (ValueError, TypeError):
            return default

    def getlist(self, key: str, type: Callable[[str], Any] | None = None) -> list[Any]:  # noqa: A002
        values = self._all.get(key, [])
        if type is None:
            return list(values)
        out = []
        for value in values:
            try:
                out.append(type(value))
            except (ValueError, TypeError):
                continue
        return out


class AMLRequest:
    """The subset of Flask's Request that Azure ML entry scripts use."""

    def __init__(self, method: str, path: str, query_string: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.full_path = f"{path}?{query_string.decode('latin-1')}"
        self.args = _Args(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
        self.headers = Headers(headers)
        self.data = body
        self.content_type = self.headers.get("content-type")

    def get_data(self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False) -> bytes | str:
        return self.data.decode(errors="replace") if as_text else self.data

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError as exc:
            if silent:
                return None
            raise BadRequest(f"malformed JSON: {exc}") from None

    @property
    def json(self) -> Any:
        return self.get_json()


class AMLResponse:
    """A response `run()` returns to choose its own body, status and headers."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
    ) -> None:
        self.status_code = status_code
        self.headers = dict(response_headers or {})
        if message is None:  # an empty JSON object, as Azure ML's AMLResponse answers None
            self.body = b"{}"
            self.headers.setdefault("Content-Type", "application/json")
        elif json_str:
            self.body = orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS)  # json.dumps writes {0: ..} as {"0": ..}
            self.headers.setdefault("Content-Type", "application/json")
        elif isinstance(message, bytes):
            self.body = message
        else:
            self.body = str(message).encode()


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def install() -> None:
    """Make the Azure ML module names resolve to this module.

    Missing parent packages become empty ones; an installed `azureml` package stays usable.
    """
    me = sys.modules[__name__]
    for alias in _ALIASES:
        parts = alias.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in sys.modules and not _importable(parent):
                package = types.ModuleType(parent)
                package.__path__ = []
                sys.modules[parent] = package
        sys.modules[alias] = me
        # `import a.b.c` binds `a` and finds the rest by attribute, as an import would have set them.
        for i in range(1, len(parts)):
            parent, child = sys.modules.get(".".join(parts[:i])), sys.modules.get(".".join(parts[: i + 1]))
            if parent is not None and child is not None and not hasattr(parent, parts[i]):
                setattr(parent, parts[i], child)
