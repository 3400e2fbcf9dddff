"""`/openapi.json` as clients meet the API: the hand-parsed request bodies' schemas are
registered, and FastAPI's automatic 422 is dropped, since app.api.errors answers every
validation failure with the contract's 400 `{"error", "code"}` instead."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api import generate

_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()  # cached by FastAPI; what follows may run on it again
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in _FASTAPI_VALIDATION_SCHEMAS:
            schemas.pop(name, None)
        schemas.update(generate.OPENAPI_SCHEMAS)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
