"""The webhook ingress: a thin Flask app (authenticate, validate, resolve tenant, enqueue, answer)."""
from ingress.app import create_app

__all__ = ["create_app"]
