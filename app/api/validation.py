"""pydantic v2 validation of request bodies and query strings (API-3's 422 shape)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from app.api.errors import ApiError

ModelT = TypeVar("ModelT", bound=BaseModel)


def _errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    return [
        {"loc": [where, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(
            include_url=False, include_context=False, include_input=False
        )
    ]


def parse_body(model: type[ModelT]) -> ModelT:
    """The JSON body validated by `model`; 422 with `loc ["body", ...]` otherwise."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(
            422, [{"loc": ["body"], "msg": "Field required", "type": "missing"}]
        )
    try:
        payload = json.loads(raw)
        # Lone surrogates (`"\ud800"`) decode but cannot be stored or written.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeError, RecursionError):
        raise ApiError(
            422, [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
        ) from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, _errors(exc, "body")) from None


def parse_query(model: type[ModelT]) -> ModelT:
    """The query string validated by `model`; else 422 with `loc ["query", ...]`."""
    values = {key: request.args.get(key) for key in request.args}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(422, _errors(exc, "query")) from None
