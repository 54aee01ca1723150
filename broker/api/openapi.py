"""``/openapi.json``: the OpenAPI 3.1 document, generated from the route table and the
msgspec schemas the handlers parse with, so it cannot drift from the code."""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from broker.api import schemas as s
from broker.api.web import Route, respond

_REF = "#/components/schemas/{name}"
_PARAM = re.compile(r"{([a-z_]+)}")


def build(routes: Iterable[Route], title: str, version: str) -> dict[str, Any]:
    routes = list(routes)
    types: set[type[msgspec.Struct]] = {s.Problem}
    for r in routes:
        types.update(t for t in (r.body, r.response) if t is not None)
    ordered = sorted(types, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(ordered, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "CityCall session broker REST API. Errors are RFC 9457 problem "
            "details (application/problem+json) with a stable `code`.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT access token, or a clinic API key cck_<id>.<secret>",
                }
            },
        },
    }


def _ref(kind: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _operation(r: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": r.summary,
        "tags": [r.tag],
        "operationId": f"{r.method.lower()}_{r.handler.__name__}",
    }
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 64},
        }
        for name in _PARAM.findall(r.path)
    ]
    for q in r.query:
        schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64}
        if q.format:
            schema = {"type": "string", "format": q.format}
        params.append(
            {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "description": q.description,
                "schema": schema,
            }
        )
    if params:
        op["parameters"] = params
    if r.body is not None:
        content = {"application/json": {"schema": _ref(r.body)}}
        if r.form_body:
            content["application/x-www-form-urlencoded"] = {"schema": _ref(r.body)}
        op["requestBody"] = {"required": True, "content": content}
    ok: dict[str, Any] = {"description": HTTPStatus(r.status).phrase}
    if r.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(r.response)}}
    responses: dict[str, Any] = {str(r.status): ok}
    problem = {"application/problem+json": {"schema": _ref(s.Problem)}}
    for status in sorted({*r.errors, *((413,) if r.body else ())}):
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": problem}
    op["responses"] = responses
    if r.auth != "none":
        op["security"] = [{"bearer": []}]
    return op


def handler(document: dict[str, Any]) -> Any:
    async def openapi(request: web.Request) -> web.Response:
        return respond(document)

    return openapi
