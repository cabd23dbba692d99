"""The admin API (/api/v1): operators of a tenant read conversations, take them over, send messages, export or
erase a user's data and read usage. See api.py (authentication, limits, errors), routes.py (the endpoints) and
openapi.py (/api/v1/openapi.json)."""
from __future__ import annotations

from flask import Flask, jsonify

from ingress.admin_api import routes  # noqa: F401  (registers the endpoints on the blueprint)
from ingress.admin_api import knowledge_routes  # noqa: F401  (the knowledge base's endpoints, issue 13)
from ingress.admin_api.api import bp
from ingress.admin_api.context import make_context
from ingress.admin_api.openapi import build_spec
from ingress.state import state


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())


def init_app(app: Flask) -> None:
    with app.app_context():
        st = state()
        app.extensions["wabot.admin"] = make_context(st.settings.redis_url, st.celery)
    app.register_blueprint(bp)
