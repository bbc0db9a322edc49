"""`GET /v1/openapi.json` (API-9) and the registry it is built from.

Every `/v1` route is declared with `route()` (or, for a route defined elsewhere,
described with `describe()`), naming its query model, body model, response model
and error statuses. The document is generated from that registry and the pydantic
models; a test compares it with Flask's URL map in both directions, so a route
added without a description, or a description without a route, fails the suite.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.api import schemas
from app.api.blueprint import v1
from app.services import package_version

REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEMES = {
    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "BearerAuth": {"type": "http", "scheme": "bearer"},
}
ERROR_TEXT = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden or wrong key",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Not UTF-8 text",
    422: "Validation error",
    500: "Internal error",
    502: "Model provider unavailable",
    503: "Service unavailable",
    504: "Timed out",
}
# A model and whether it is read (`validation`) or written (`serialization`).
SchemaKey = tuple[type[BaseModel], Literal["validation", "serialization"]]
_FLASK_PARAMETER = re.compile(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


@dataclass(frozen=True)
class Operation:
    """One documented method of one path (a Flask rule such as `/v1/runs/<run_id>`)."""

    method: str
    rule: str
    summary: str
    response: type[BaseModel]
    status: int = 200
    many: bool = False
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()


OPERATIONS: dict[tuple[str, str], Operation] = {}
_registry_lock = threading.Lock()
# The built document, dropped whenever an operation is described.
_cached_document: dict[str, dict[str, Any]] = {}


def describe(method: str, rule: str, summary: str, **details: Any) -> None:
    """Document a route; `details` are the other fields of `Operation`."""
    operation = Operation(method.upper(), rule, summary, **details)
    with _registry_lock:
        OPERATIONS[(operation.method, operation.rule)] = operation
    _cached_document.clear()


def route(
    blueprint: Blueprint, rule: str, method: str, summary: str, **details: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view on `blueprint` and document it in one step."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        blueprint.add_url_rule(rule, view_func=view, methods=[method])
        describe(method, (blueprint.url_prefix or "") + rule, summary, **details)
        return view

    return decorator


def openapi_path(rule: str) -> str:
    """`/v1/runs/<run_id>` → `/v1/runs/{run_id}`."""
    return _FLASK_PARAMETER.sub(r"{\1}", rule)


# Building the document ----------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every described operation (built once)."""
    document = _cached_document.get("v1")
    if document is None:
        document = _build_document(sorted(OPERATIONS.values(), key=_order))
        _cached_document["v1"] = document
    return document


def _order(operation: Operation) -> tuple[str, str]:
    return operation.rule, operation.method


def _build_document(operations: list[Operation]) -> dict[str, Any]:
    refs, components = _component_schemas(operations)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        item = paths.setdefault(openapi_path(operation.rule), {})
        item[operation.method.lower()] = _operation_object(operation, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Orket runtime API",
            "version": package_version(),
            "description": "Runs, cards, events and system routes of the API process.",
        },
        "servers": [{"url": "/"}],
        "security": [{name: []} for name in SECURITY_SCHEMES],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


def _component_schemas(
    operations: list[Operation],
) -> tuple[dict[SchemaKey, dict[str, Any]], dict[str, Any]]:
    wanted: set[SchemaKey] = {(schemas.ErrorOut, "serialization")}
    for operation in operations:
        wanted.add((operation.response, "serialization"))
        for model in (operation.query, operation.body):
            if model is not None:
                wanted.add((model, "validation"))
    ordered = sorted(wanted, key=lambda item: (item[0].__name__, item[1]))
    refs, definitions = models_json_schema(ordered, ref_template=REF_TEMPLATE)
    return {key: refs[key] for key in ordered}, definitions.get("$defs", {})


def _operation_object(
    operation: Operation, refs: dict[SchemaKey, dict[str, Any]]
) -> dict[str, Any]:
    response_schema = refs[(operation.response, "serialization")]
    if operation.many:
        response_schema = {"type": "array", "items": response_schema}
    responses: dict[str, Any] = {
        str(operation.status): {
            "description": operation.summary,
            "content": {"application/json": {"schema": response_schema}},
        }
    }
    error_ref = refs[(schemas.ErrorOut, "serialization")]
    statuses = {401, 403, *operation.errors}
    if operation.query or operation.body:
        statuses.add(422)
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        }
    result: dict[str, Any] = {
        "operationId": _operation_id(operation),
        "summary": operation.summary,
        "parameters": _parameters(operation),
        "responses": responses,
    }
    if operation.body is not None:
        result["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": refs[(operation.body, "validation")],
                }
            },
        }
    return result


def _operation_id(operation: Operation) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", openapi_path(operation.rule)).strip("_")
    return f"{operation.method.lower()}_{words}"


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _FLASK_PARAMETER.findall(operation.rule)
    ]
    if operation.query is None:
        return parameters
    schema = operation.query.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", ()))
    for name, field_schema in schema.get("properties", {}).items():
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": field_schema,
            }
        )
    return parameters


# The route ----------------------------------------------------------------------------


@route(v1, "/openapi.json", "GET", "This document", response=schemas.Output)
def openapi_json() -> Response:
    return jsonify(openapi_document())


describe("GET", "/v1/version", "Package and API version", response=schemas.VersionOut)
