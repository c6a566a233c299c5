"""`/swagger.json` as Azure ML serves it: the app root's own `swagger.json` or `swagger2.json`
(`swagger3.json`, `swagger3.1.json`) as it is, else one made from the entry script's inference_schema
decorators.

Version 2 is Swagger 2.0 with `definitions`; versions 3 and 3.1 are OpenAPI 3.0 / 3.1 with
`components.schemas`.  A run() without decorators gets empty object schemas, as in Azure ML.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
        "message": {"type": "string"},  # the error's message again, where Azure ML's clients read it
    },
}
_SCORE_DESCRIPTION = "Run the service's model(s) and get the prediction output."
_HEALTH_DESCRIPTION = "Liveness: 200 while the server process is up."


class UnsupportedVersion(ValueError):
    pass


def supported_versions(run: Callable[..., Any]) -> list[str]:
    from inference_schema.schema_util import get_supported_versions

    return list(get_supported_versions(run))


# Each version's own files in the app root, the first found served. Version 2 reads swagger.json first, as
# Azure ML's server does: the name Azure ML v1 services gave their hand-written document.
_FILES = {"2": ("swagger.json", "swagger2.json"), "2.0": ("swagger.json", "swagger2.json"), "3": ("swagger3.json",),
          "3.0": ("swagger3.json",), "3.1": ("swagger3.1.json",)}
_UNDECLARED = {"type": "object", "example": {}}


def document(run: Callable[..., Any], title: str, version: str, app_root: Path, decorated: bool) -> Any:
    """The swagger document for `run` in `version` ("2", "3", "3.1" or their ".0" forms)."""
    from inference_schema.schema_util import get_input_schema, get_output_schema

    if version not in _FILES:
        raise UnsupportedVersion(f"swagger version {version} is not valid; use 2, 3 or 3.1")
    for own in (app_root / name for name in _FILES[version]):
        if own.is_file():
            try:
                return json.loads(own.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ValueError(f"{own.name} in the app root is not JSON: {exc}") from None
    wanted = version if "." in version else f"{version}.0"
    if decorated:
        if wanted not in supported_versions(run):
            raise UnsupportedVersion(f"swagger version {version} is not available; use one of {supported_versions(run)}")
        inputs, outputs = _without_headers(get_input_schema(run)), copy.deepcopy(get_output_schema(run))
    else:
        inputs, outputs = copy.deepcopy(_UNDECLARED), copy.deepcopy(_UNDECLARED)
    schemas = {"ServiceInput": inputs, "ServiceOutput": outputs, "ErrorResponse": _ERROR}
    info = {"title": title, "description": f"API specification for the scoring service {title}", "version": "1.0"}
    if wanted == "2.0":
        return _swagger2(info, schemas)
    return _openapi3(info, schemas, "3.1.0" if wanted == "3.1" else "3.0.1")


def _without_headers(schema: dict[str, Any]) -> dict[str, Any]:
    """inference_schema lists a `request_headers` parameter as an input; it is not one."""
    schema = copy.deepcopy(schema)
    schema.get("properties", {}).pop("request_headers", None)
    example = schema.get("example")
    if isinstance(example, dict):
        example.pop("request_headers", None)
    return schema


def _swagger2(info: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": info,
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "Bearer": {"type": "apiKey", "name": "Authorization", "in": "header",
                       "description": "For example: Bearer abc123"}
        },
        "paths": {
            "/": {"get": {"operationId": "ServiceHealthCheck", "description": _HEALTH_DESCRIPTION,
                          "responses": {"200": {"description": "Healthy", "schema": {"type": "string"}}}}},
            "/score": {"post": {
                "operationId": "RunMLService",
                "description": _SCORE_DESCRIPTION,
                "security": [{"Bearer": []}],
                "parameters": [{"name": "serviceInputPayload", "in": "body",
                                "description": "The input payload for the model(s).",
                                "schema": {"$ref": "#/definitions/ServiceInput"}}],
                "responses": {
                    "200": {"description": "The prediction.", "schema": {"$ref": "#/definitions/ServiceOutput"}},
                    "default": {"description": "The service failed to score.",
                                "schema": {"$ref": "#/definitions/ErrorResponse"}},
                },
            }},
        },
        "definitions": schemas,
    }


def _openapi3(info: dict[str, Any], schemas: dict[str, Any], openapi: str) -> dict[str, Any]:
    def body(ref: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}

    return {
        "openapi": openapi,
        "info": info,
        "paths": {
            "/": {"get": {"operationId": "ServiceHealthCheck", "description": _HEALTH_DESCRIPTION,
                          "responses": {"200": {"description": "Healthy",
                                                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/score": {"post": {
                "operationId": "RunMLService",
                "description": _SCORE_DESCRIPTION,
                "security": [{"Bearer": []}],
                "requestBody": {"description": "The input payload for the model(s).", "content": body("ServiceInput")},
                "responses": {
                    "200": {"description": "The prediction.", "content": body("ServiceOutput")},
                    "default": {"description": "The service failed to score.", "content": body("ErrorResponse")},
                },
            }},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer",
                                           "description": "For example: Bearer abc123"}},
        },
    }
