"""Sign-in and sign-out, and `signed_in`, the guard of every console page.

An operator signs in to one tenant with the name and password `wabot operators add --password` gave them. Failed
attempts are limited per tenant and name and per client address (`FAILED_PER_NAME`, `FAILED_PER_ADDRESS`):
beyond them every attempt is refused for a while, the right password included, and the page says so. A page of
another tenant than the session's is 404, like a page that does not exist: nothing tells which tenants exist."""
from __future__ import annotations

import functools
import logging
from typing import Callable

from flask import Blueprint, abort, g, redirect, render_template, request, url_for
from limits import parse

from ingress.admin_api.context import admin_context, within_rate
from ingress.console import sessions
from ingress.console.security import add_headers, check_csrf
from ingress.errors import http_error
from ingress.state import state
from shared import log as logctx
from shared.db import operators
from shared.passwords import verify_password

log = logging.getLogger("ingress.console")
bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")
bp.after_request(add_headers)
COOKIE = "wabot_console"
FAILED_PER_NAME = parse("5/15 minutes")
FAILED_PER_ADDRESS = parse("20/15 minutes")


def _limits_ok(tenant_id: str, name: str, hit: bool) -> bool:
    """Whether more sign-in attempts are allowed; `hit` counts a failure."""
    limiter = admin_context().limiter
    keys = [(FAILED_PER_NAME, ("console-login", tenant_id, name.lower())),
            (FAILED_PER_ADDRESS, ("console-login", request.remote_addr or "-"))]
    if hit:
        return all([limiter.hit(limit, *key) for limit, key in keys])
    return all(limiter.test(limit, *key) for limit, key in keys)


def _check_password(tenant, name: str, password: str) -> dict | None:
    """The operator when the password is right. An unknown tenant or name costs the same hashing time."""
    operator = None
    if tenant is not None and name:
        with admin_context().pools.connection(tenant) as conn:
            operator = operators.active_by_name(conn, name)
    ok = verify_password(operator["password_hash"] if operator else None, password)
    return operator if ok else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("console/login.html", error=None)
    form = request.form
    tenant_id, name, password = form.get("tenant", ""), form.get("name", "").strip(), form.get("password", "")
    tenant = state().tenants.get(tenant_id)
    error, status = "Wrong tenant, name or password.", 401
    if not _limits_ok(tenant_id, name, hit=False):
        error, status = "Too many failed sign-ins. Wait 15 minutes and try again.", 429
    elif operator := _check_password(tenant, name, password):
        session = sessions.start(state().redis, tenant.tenant_id, operator["id"], operator["name"])
        log.info("console sign-in", extra={"tenant_id": tenant.tenant_id, "operator": operator["name"]})
        response = redirect(url_for("console.home", tenant_id=tenant.tenant_id))
        response.set_cookie(COOKIE, session.sid, httponly=True, secure=True, samesite="Strict", path="/console")
        return response
    else:
        _limits_ok(tenant_id, name, hit=True)
        log.warning("console sign-in refused", extra={"tenant_id": tenant_id[:40], "remote": request.remote_addr})
    return render_template("console/login.html", error=error, tenant=tenant_id, name=name), status


@bp.route("/logout", methods=["POST"])
def logout():
    session = sessions.load(state().redis, request.cookies.get(COOKIE))
    check_csrf(session.csrf if session else None)
    sessions.end(state().redis, request.cookies.get(COOKIE))
    response = redirect(url_for("console.login"))
    response.delete_cookie(COOKIE, path="/console")
    return response


def signed_in(view: Callable) -> Callable:
    """Guard a `/t/<tenant_id>/...` page: a live session of this tenant's active operator, and the CSRF check
    on unsafe methods; sets g.console (the session) and g.tenant. No session: to the sign-in page; another
    tenant's page: 404."""
    @functools.wraps(view)
    def guarded(tenant_id: str, **kwargs):
        session = sessions.load(state().redis, request.cookies.get(COOKIE))
        if session is None:
            return redirect(url_for("console.login"))
        tenant = state().tenants.get(tenant_id)
        if tenant is None or session.tenant_id != tenant.tenant_id:
            abort(404)
        with admin_context().pools.connection(tenant) as conn:
            if operators.active_by_id(conn, session.operator_id) is None:  # revoked since it signed in
                sessions.end(state().redis, session.sid)
                return redirect(url_for("console.login"))
        check_csrf(session.csrf)
        g.console, g.tenant = session, tenant
        logctx.bind(tenant_id=tenant.tenant_id, operator=session.operator)
        return view(**kwargs)
    return guarded


@bp.route("/")
def index():
    session = sessions.load(state().redis, request.cookies.get(COOKIE))
    if session is None:
        return redirect(url_for("console.login"))
    return redirect(url_for("console.home", tenant_id=session.tenant_id))


@bp.route("/t/<tenant_id>/")
@signed_in
def home():
    return redirect(url_for("console.conversations", tenant_id=g.tenant.tenant_id))


@bp.app_errorhandler(404)
def _not_found(exc):
    """Console URLs get an HTML page (the rest of the app answers JSON: ingress/errors.py)."""
    if not request.path.startswith("/console"):
        return http_error(exc)
    return render_template("console/error.html", title="Not found",
                           message="There is no such page here."), 404


@bp.errorhandler(403)
def _forbidden(exc):
    if request.accept_mimetypes.best == "application/json":
        return http_error(exc)
    return render_template("console/error.html", title="Refused", message=exc.description), 403
