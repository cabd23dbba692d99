"""/api/v1/openapi.json: the OpenAPI 3 description of the admin API, generated (apispec's marshmallow plugin)
from the route table and the very schemas the routes validate and dump with, so it cannot drift from them."""
from __future__ import annotations

import functools
import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from ingress.admin_api import schemas
from ingress.admin_api.api import ROUTES, RouteDoc

_ARG = re.compile(r"<(?:(\w+):)?(\w+)>")
ERRORS = {"400": "invalid input", "401": "missing, invalid or revoked operator token for this tenant",
          "404": "no such user in this tenant", "409": "the message cannot be sent (reason in the message)",
          "413": "body too large", "429": "rate limit"}


def _path(rule: str) -> tuple[str, list[dict]]:
    """`/tenants/<tenant_id>/x/<int:user_id>` -> (`/tenants/{tenant_id}/x/{user_id}`, its path parameters)."""
    params = [{"in": "path", "name": name, "required": True,
               "schema": {"type": "integer" if conv == "int" else "string"}} for conv, name in _ARG.findall(rule)]
    return _ARG.sub(lambda m: "{" + m.group(2) + "}", rule), params


def _operation(route: RouteDoc, path_params: list[dict]) -> dict:
    op = {"summary": route.summary, "parameters": list(path_params),
          "responses": {str(route.status): {"description": "OK", "content": {"application/json": {
              "schema": route.response}}}}}
    for code, text in ERRORS.items():
        op["responses"][code] = {"description": text, "content": {"application/json": {"schema": "Error"}}}
    if route.query is not None:
        op["parameters"].append({"in": "query", "schema": route.query})
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.body}}}
    return op


@functools.cache
def build_spec() -> dict:
    spec = APISpec(title="wabot admin API", version="1.0.0", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Per-tenant operator API: conversations, handoff, users' data, usage. "
                                        "Authenticate with `Authorization: Bearer <operator token>` "
                                        "(`wabot operators add`)."},
                   servers=[{"url": "/api/v1"}])
    spec.components.security_scheme("operatorToken", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=schemas.Error)
    paths: dict[str, dict] = {}
    for route in ROUTES:
        path, params = _path(route.rule)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, params)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    document["security"] = [{"operatorToken": []}]
    return document
