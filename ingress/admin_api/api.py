"""The admin API's blueprint and its plumbing: who is calling (operator tokens, per tenant), limits, input
validated and output dumped with the marshmallow schemas of each route, JSON errors, one log line per request.

Authentication: `Authorization: Bearer <token>`; the token's SHA-256 is looked up among the active operators of
the tenant named in the path, in that tenant's own database. A token of another tenant, a revoked or unknown
token, no token, or an unknown tenant all get the same 401: nothing tells which tenants exist."""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import psycopg
from flask import Blueprint, g, jsonify, request
from marshmallow import Schema, ValidationError

from ingress.admin_api.context import FAILED_AUTH_RATE, OPERATOR_RATE, admin_context, within_rate
from ingress.admin_api.tokens import hash_token
from ingress.errors import error_response
from ingress.state import state
from shared import log as logctx
from shared.db import operators

log = logging.getLogger("ingress.admin_api")
bp = Blueprint("admin_api", __name__, url_prefix="/api/v1")
MAX_BODY_BYTES = 64 * 1024   # the largest body is one message text (4,096 characters)
BODY_LIMITS: dict[str, int] = {}  # endpoint -> a larger limit (a knowledge upload: knowledge_routes.py)
TENANT_PREFIX = "/tenants/<tenant_id>"


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


@dataclass(frozen=True)
class RouteDoc:
    """What openapi.py documents of a route: the same schemas the route validates and dumps with."""

    rule: str
    method: str
    summary: str
    response: type[Schema]
    query: type[Schema] | None
    body: type[Schema] | None
    status: int


ROUTES: list[RouteDoc] = []


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _unauthorised(reason: str):
    log.warning("admin api refused", extra={"reason": reason, "remote": request.remote_addr,
                                             "route": str(request.url_rule)})
    return error_response(401, "unauthorized", "missing, invalid or revoked operator token for this tenant")


def _operator(tenant, token: str) -> dict | None:
    """The active operator of `tenant` holding `token` (a lookup of its hash: timing reveals nothing usable)."""
    with admin_context().pools.connection(tenant) as conn:
        return operators.active_by_token_hash(conn, hash_token(token))


@bp.before_request
def _authenticate():
    limit = BODY_LIMITS.get(request.endpoint or "", MAX_BODY_BYTES)
    if request.content_length is not None and request.content_length > limit:
        return error_response(413, "request_entity_too_large", f"the body is larger than {limit} bytes")
    tenant_id = (request.view_args or {}).get("tenant_id")
    if tenant_id is None:
        return None  # the OpenAPI description is public
    token, tenant = _bearer(), state().tenants.get(tenant_id)
    if tenant is None or token is None:
        return _unauthorised("unknown tenant" if token else "no token")
    try:
        operator = _operator(tenant, token)
    except psycopg.errors.UndefinedTable:
        return error_response(503, "not_migrated", f"run `wabot migrate --tenant {tenant.tenant_id}`")
    if operator is None:
        # tokens cannot be guessed (256 bits): this limit only bounds the database lookups a stranger causes
        if not within_rate(FAILED_AUTH_RATE, "failed", tenant.tenant_id, request.remote_addr or "-"):
            return error_response(429, "too_many_requests", "too many failed attempts; retry later")
        return _unauthorised("invalid or revoked token")
    if not within_rate(OPERATOR_RATE, tenant.tenant_id, str(operator["id"])):
        return error_response(429, "too_many_requests", f"more than {OPERATOR_RATE} requests; retry later")
    g.admin_tenant, g.admin_operator = tenant, operator
    logctx.bind(tenant_id=tenant.tenant_id, operator=operator["name"])
    return None


@bp.after_request
def _log(response):
    """One line per request with the operator's name (never the token, never the query: it may hold a phone)."""
    operator = g.get("admin_operator")
    log.info("admin api request", extra={"operator": operator["name"] if operator else None,
                                         "method": request.method, "route": str(request.url_rule),
                                         "status": response.status_code})
    return response


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError):
    return error_response(400, "invalid_input", "the request does not match the API's schema", exc.messages)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.error, exc.message)


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object (Content-Type: application/json)")
    return body


def api_route(rule: str, method: str, *, summary: str, response: type[Schema], query: type[Schema] | None = None,
              body: type[Schema] | None = None, status: int = 200) -> Callable:
    """Register a tenant route: the view gets `query` / `body` loaded with their schemas and returns what the
    `response` schema dumps; the same schemas describe it in the OpenAPI document."""
    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def endpoint(tenant_id: str, **kwargs):
            if query is not None:
                kwargs["query"] = query().load(request.args.to_dict())
            if body is not None:
                kwargs["body"] = body().load(_json_body())
            return jsonify(response().dump(view(**kwargs))), status

        bp.add_url_rule(TENANT_PREFIX + rule, view_func=endpoint, methods=[method])
        ROUTES.append(RouteDoc(TENANT_PREFIX + rule, method, summary, response, query, body, status))
        return endpoint
    return wrap


def actor() -> str:
    return f"operator:{g.admin_operator['name']}"
