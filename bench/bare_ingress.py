"""The bare baseline of `bench_ingress.py`: what a webhook costs at the least.

Flask, one marshmallow schema of the same inbound payload (the fields a worker reads, nested as Infobip sends
them), a token check and one Redis LPUSH of the validated body. No dedupe, no accepted record, no Celery. Served
by the same gunicorn settings as the real ingress:

    PYTHONPATH=bench gunicorn -c ingress/gunicorn.conf.py bare_ingress:app

Environment: REDIS_URL, WEBHOOK_VERIFY_TOKEN (as the ingress). The pushed list is `bare`.
"""
from __future__ import annotations

import hmac
import json
import os

import redis
from flask import Flask, jsonify, request
from marshmallow import INCLUDE, Schema, ValidationError, fields, validate


class _Lenient(Schema):
    class Meta:
        unknown = INCLUDE


class MessageSchema(_Lenient):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    text = fields.String(allow_none=True)


class ContactSchema(_Lenient):
    name = fields.String(allow_none=True)


class PriceSchema(_Lenient):
    pricePerMessage = fields.Float(allow_none=True)
    currency = fields.String(allow_none=True)


class ResultSchema(_Lenient):
    from_ = fields.String(data_key="from", validate=validate.Length(min=1, max=150))
    to = fields.String(validate=validate.Length(min=1, max=150))
    messageId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    integrationType = fields.String(allow_none=True)
    receivedAt = fields.String(allow_none=True)
    message = fields.Nested(MessageSchema)
    contact = fields.Nested(ContactSchema, allow_none=True)
    price = fields.Nested(PriceSchema, allow_none=True)


class EnvelopeSchema(_Lenient):
    results = fields.List(fields.Nested(ResultSchema), required=True, validate=validate.Length(max=2000))
    messageCount = fields.Integer()
    pendingMessageCount = fields.Integer()


def _client_url(url: str) -> str:
    return "unix://" + url[len("redis+socket://"):] if url.startswith("redis+socket://") else url


app = Flask("bare-ingress")
_schema = EnvelopeSchema()
_redis = redis.Redis.from_url(_client_url(os.environ["REDIS_URL"]), socket_timeout=2, socket_connect_timeout=2)
_token = os.environ["WEBHOOK_VERIFY_TOKEN"].encode()


@app.post("/webhooks/infobip")
def webhook():
    presented = request.headers.get("X-Webhook-Token", "").encode()
    if not hmac.compare_digest(presented, _token):
        return jsonify({"error": "unauthorized"}), 401
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify({"error": "invalid_json"}), 400
    try:
        _schema.load(body)
    except ValidationError as exc:
        return jsonify({"error": "invalid_payload", "details": exc.messages}), 400
    try:
        _redis.lpush("bare", json.dumps(body))
    except redis.RedisError:
        return jsonify({"error": "queue_unavailable"}), 503
    return jsonify({"accepted": len(body["results"])}), 200


@app.get("/health")
def health():
    return jsonify({"status": "ok"})
