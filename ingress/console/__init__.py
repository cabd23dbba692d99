"""The operator console (issue 14): server-rendered pages under /console on the ingress app, for a business's
operators to watch and take over conversations, try the bot, load documents and see usage.

Pages live in small modules (conversations, playground, knowledge, usage), each registering its routes on the
one blueprint (`auth.bp`) and guarding them with `auth.signed_in`; templates under `templates/console/`, the few
static files (one stylesheet, small scripts, no build step) under `static/`. Every response gets the security
headers of `security.py`."""
from __future__ import annotations

from flask import Flask

# each module registers its pages on auth.bp when imported
from ingress.console import auth, conversations, knowledge, playground, usage  # noqa: F401


def init_app(app: Flask) -> None:
    app.register_blueprint(auth.bp)
