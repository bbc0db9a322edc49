"""`GET /v1/openapi.json` (API-9) against Flask's URL map, in both directions."""

from __future__ import annotations

from typing import Any

import pytest

from app.api.openapi import openapi_path
from app.api.schemas import RunStatus, RunType
from app.models.runtime import RUN_STATUSES, RUN_TYPES, SANDBOX_JOB_TYPES

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def url_map_operations(flask_app) -> set[tuple[str, str]]:
    """`(path, method)` of every /v1 rule, in OpenAPI spelling."""
    operations = set()
    for rule in flask_app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operations.add((openapi_path(rule.rule), method.lower()))
    return operations


def document_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


@pytest.fixture
def document(client, auth_headers) -> dict[str, Any]:
    response = client.get("/v1/openapi.json", headers=auth_headers)
    assert response.status_code == 200
    return response.get_json()


def test_every_route_is_documented_and_every_documented_route_exists(app, document):
    in_map = url_map_operations(app)
    documented = document_operations(document)

    assert in_map - documented == set(), "routes missing from the document"
    assert documented - in_map == set(), "documented routes that do not exist"
    assert ("/v1/runs/{run_id}/halt", "post") in documented


def test_the_comparison_notices_an_undocumented_route(settings):
    from app import create_app
    from app.api.openapi import openapi_document

    flask_app = create_app(settings)
    flask_app.add_url_rule("/v1/undocumented", endpoint="undocumented", view_func=str)

    missing = url_map_operations(flask_app) - document_operations(openapi_document())
    assert missing == {("/v1/undocumented", "get")}
    flask_app.extensions["orket"].stop()


def test_it_is_openapi_3_1_with_both_key_forms(document):
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"] == {
        "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "BearerAuth": {"type": "http", "scheme": "bearer"},
    }
    assert document["security"] == [{"ApiKeyHeader": []}, {"BearerAuth": []}]


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("type") == "array":
        return resolve(document, schema["items"])
    reference = schema["$ref"]
    assert reference.startswith("#/components/schemas/")
    return document["components"]["schemas"][reference.rsplit("/", 1)[1]]


def test_every_operation_has_a_success_schema_and_error_responses(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            successes = [
                code for code in operation["responses"] if code.startswith("2")
            ]
            assert len(successes) == 1, (path, method)
            content = operation["responses"][successes[0]]["content"]
            resolve(document, content["application/json"]["schema"])
            assert {"401", "403"} <= set(operation["responses"]), (path, method)


def test_request_bodies_and_query_parameters_are_described(document):
    save = document["paths"]["/v1/system/save"]["post"]
    body = resolve(
        document, save["requestBody"]["content"]["application/json"]["schema"]
    )
    assert set(body["required"]) == {"path", "content"}
    assert "422" in save["responses"]

    runs = document["paths"]["/v1/runs"]["get"]
    limit = next(p for p in runs["parameters"] if p["name"] == "limit")
    assert limit["in"] == "query"
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    assert (
        runs["responses"]["200"]["content"]["application/json"]["schema"]["type"]
        == "array"
    )

    halt = document["paths"]["/v1/runs/{run_id}/halt"]["post"]
    assert halt["parameters"] == [
        {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert {"200", "404", "409"} <= set(halt["responses"])

    run_active = document["paths"]["/v1/system/run-active"]["post"]
    assert "202" in run_active["responses"]


def test_documented_enums_match_the_models():
    assert set(RunStatus.__args__) == set(RUN_STATUSES)
    assert set(RunType.__args__) == {*RUN_TYPES, *SANDBOX_JOB_TYPES}


def test_the_document_needs_the_key(client):
    assert client.get("/v1/openapi.json").status_code == 401
