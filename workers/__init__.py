"""Celery workers: `celery -A workers worker -Q inbound` (and outbound, events, scheduled), `celery -A workers beat`."""
from workers.app import app

celery = app
__all__ = ["app", "celery"]
