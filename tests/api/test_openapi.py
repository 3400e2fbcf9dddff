"""/openapi.json describes the whole API: every route the app serves under /api, /v1
and /admin is in it, every operation's answers have a declared schema (a model with
properties, not a free-form object), errors are the contract's shapes, the parameters
and bodies parsed by hand are declared, FastAPI's 422 (never sent) is not listed, and
each operation names the credentials it takes."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.api.images import GALLERY_DEFAULT_LIMIT
from app.console import routes as console
from app.history import images as history
from app.main import create_app
from tests.support.gateway import Stack

JSON = "application/json"
# The operator console's HTML and assets live under /admin but are not API (like the
# dashboard's); its one JSON route, the model list, is described like any other.
CONSOLE_PAGES = {route.path for route in console.router.routes if isinstance(route, APIRoute)}


@pytest.fixture(scope="module")
async def spec(embedded_stack: Stack) -> dict[str, Any]:
    async with embedded_stack.client() as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        schema = spec["components"]["schemas"][name]
    return schema


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def _served(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every API route the app serves, its included routers' too."""
    # Recent FastAPI keeps included routers nested (and walks them with this); older
    # versions copy their routes into app.routes.
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: list[Any] = list(walk(app.routes)) if walk is not None else list(app.routes)
    return {
        # OpenAPI spells a `{name:path}` parameter `{name}`.
        (method, route.path.replace(":path}", "}"))
        for route in routes
        if isinstance(getattr(route, "original_route", route), APIRoute)
        and route.path.startswith(("/api/", "/v1/", "/admin/"))
        and route.path not in CONSOLE_PAGES
        for method in route.methods
    }


def test_every_api_route_is_in_the_schema(embedded_stack: Stack, spec: dict[str, Any]) -> None:
    # The same settings as the live gateway (admin token set, so /admin/v1 is mounted).
    served = _served(create_app(embedded_stack.settings))
    documented = {(method, path) for method, path, _ in _operations(spec)}
    assert served, "no API routes found"
    assert served - documented == set()
    assert any(path.startswith("/admin/v1/") for _, path in served)


def test_every_operation_declares_its_response_schemas(spec: dict[str, Any]) -> None:
    problems: list[str] = []
    for method, path, operation in _operations(spec):
        label = f"{method} {path}"
        responses = operation["responses"]
        if "422" in responses:
            problems.append(f"{label}: lists FastAPI's 422, which the gateway never sends")
        successes = [status for status in responses if status.startswith("2")]
        success_schemas = [
            media.get("schema")
            for status in successes
            for media in responses[status].get("content", {}).values()
        ]
        if not successes:
            problems.append(f"{label}: no success response")
        for status, response in responses.items():
            if status == "204":
                continue
            content = response.get("content", {})
            if not content:
                problems.append(f"{label} {status}: no content schema")
            for media_type, media in content.items():
                schema = _resolve(spec, media.get("schema", {}))
                if media_type == JSON and not schema.get("properties"):
                    problems.append(f"{label} {status}: {media_type} is not a declared model")
                elif media_type != JSON and schema.get("type") != "string":
                    problems.append(f"{label} {status}: {media_type} has no schema")
                # An error is an error shape, unless it is the success body with a
                # failing status (readiness: 503 with the same checks).
                if (
                    status[0] in "45"
                    and media_type == JSON
                    and media["schema"] not in success_schemas
                ):
                    error = schema["properties"].get("error", {})
                    # The native error has `error` as a string; OpenAI's nests an object.
                    if not (error.get("type") == "string" or "$ref" in error):
                        problems.append(f"{label} {status}: not an error shape")
    assert problems == [], "\n".join(problems)


def _parameters(spec: dict[str, Any], method: str, path: str) -> dict[str, dict[str, Any]]:
    operation = spec["paths"][path][method]
    return {p["name"]: p["schema"] for p in operation.get("parameters", []) if p["in"] == "query"}


def test_hand_parsed_query_parameters_are_declared_with_their_bounds(
    spec: dict[str, Any],
) -> None:
    images = _parameters(spec, "get", "/api/v1/images")
    assert set(images) == {"limit", "cursor", "offset", "model"}
    assert images["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": history.MAX_LIMIT,
        "default": history.DEFAULT_LIMIT,
    }
    gallery = _parameters(spec, "get", "/api/v1/gallery")
    assert gallery["type"]["enum"] == ["image", "video", "all"]
    assert gallery["limit"]["default"] == GALLERY_DEFAULT_LIMIT
    assert _parameters(spec, "get", "/api/v1/credits")["limit"]["maximum"] == 100
    usage = _parameters(spec, "get", "/admin/v1/usage")
    assert set(usage) == {"format", "tenant", "model", "apiKey", "from", "to"}
    assert usage["from"]["format"] == "date"
    assert set(_parameters(spec, "get", "/admin/v1/tenants")) == {"limit", "offset"}


def test_request_bodies_are_declared(spec: dict[str, Any]) -> None:
    def body(method: str, path: str, media_type: str = JSON) -> dict[str, Any]:
        request_body = spec["paths"][path][method]["requestBody"]
        return _resolve(spec, request_body["content"][media_type]["schema"])

    assert body("post", "/api/v1/generate-image")["required"] == ["prompt"]
    assert body("post", "/admin/v1/tenants")["required"] == ["name"]
    assert body("post", "/admin/v1/tenants/{name}/credits")["properties"]["amount"]["maximum"]
    limits = body("put", "/admin/v1/tenants/{name}/rate-limits")["properties"]
    assert set(limits) == {"perMinute", "keyPerMinute"}
    assert "label" in body("post", "/admin/v1/tenants/{name}/keys")["properties"]
    assert body("post", "/v1/images/generations")["properties"]["n"]["maximum"] == 10
    edits = body("post", "/v1/images/edits", "multipart/form-data")
    assert edits["properties"]["image"]["format"] == "binary"
    assert {"image", "prompt"} <= set(edits["required"])


def test_operations_name_their_credentials(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    for name in ("apiKey", "adminToken"):
        assert schemes[name]["type"] == "http" and schemes[name]["scheme"] == "bearer"
    for method, path, operation in _operations(spec):
        names = {name for requirement in operation.get("security", []) for name in requirement}
        if path.startswith("/admin/"):
            assert names == {"adminToken"}, f"{method} {path}"
        elif path.startswith(("/api/", "/v1/")):
            assert names == {"apiKey"}, f"{method} {path}"
        else:  # health and metrics are open
            assert names == set(), f"{method} {path}"
