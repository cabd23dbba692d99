"""What the ingress app holds: parsed settings, tenants, the Celery publisher and a Redis client."""
from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import Flask, current_app

from shared.config.settings import Settings
from shared.config.tenants import TenantRegistry


@dataclass(frozen=True)
class IngressState:
    settings: Settings
    tenants: TenantRegistry
    celery: Celery
    redis: redis.Redis


def init_app(app: Flask, state: IngressState) -> None:
    app.extensions["wabot"] = state


def state() -> IngressState:
    return current_app.extensions["wabot"]
