"""The ingress answers each bad request as Infobip needs: 400 / 401 / 413 / 503, and 200 for unknown numbers."""
import base64
import json

import pytest

from helpers import AUTH, BETA_TOKEN, NUMBERS, WEBHOOK_TOKEN, inbound, new_user


def post(client, body, headers=AUTH, path="/webhooks/infobip", raw=None):
    data = raw if raw is not None else json.dumps(body)
    return client.post(path, data=data, headers={**headers, "Content-Type": "application/json"})


def test_malformed_json_is_400(client):
    resp = post(client, None, raw="{not json")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_json"


@pytest.mark.parametrize("body", [
    [],                                        # not an object
    {"messageCount": 1},                       # no results
    {"results": "nope"},
    {"results": [{"from": "1555", "to": "1556", "message": {"type": "TEXT", "text": "x"}}]},   # no messageId
    {"results": [{"from": "1555", "to": "1556", "messageId": "m1", "message": {"text": "x"}}]},  # no type
    {"results": [{"messageId": "m1", "foo": 1}]},   # neither inbound nor report
    {"results": [{"to": "1556", "messageId": "m1", "message": {"type": "TEXT", "text": "x"}}]},  # no from
])
def test_body_that_is_not_the_envelope_is_400_with_details(client, body):
    resp = post(client, body)
    assert resp.status_code == 400
    payload = resp.get_json()
    assert payload["error"] == "invalid_payload" and payload["details"]


@pytest.mark.parametrize("headers", [
    {}, {"X-Webhook-Token": "wrong"},
    {"Authorization": "Basic " + base64.b64encode(b"infobip:wrong").decode()},
    {"Authorization": "Bearer " + WEBHOOK_TOKEN},
])
def test_bad_credentials_are_401(client, headers):
    resp = post(client, inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "hi"}), headers=headers)
    assert resp.status_code == 401
    assert WEBHOOK_TOKEN not in resp.get_data(as_text=True)


def test_basic_auth_password_and_tenant_tokens(client):
    basic = {"Authorization": "Basic " + base64.b64encode(f"infobip:{WEBHOOK_TOKEN}".encode()).decode()}
    assert post(client, inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "hi"}),
                headers=basic).status_code == 200
    # beta's own token is good for beta's number ...
    own = {"X-Webhook-Token": BETA_TOKEN}
    assert post(client, inbound(NUMBERS["beta"], new_user(), {"type": "TEXT", "text": "hi"}),
                headers=own).status_code == 200
    # ... but not for alpha's
    assert post(client, inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "hi"}),
                headers=own).status_code == 401


def test_number_of_no_tenant_is_200_and_ignored(client):
    resp = post(client, inbound("19999999999", new_user(), {"type": "TEXT", "text": "hi"}))
    assert resp.status_code == 200
    assert resp.get_json()["accepted"] == 0 and resp.get_json()["ignored"] == 1


def test_body_over_the_limit_is_413(settings, tenants):
    from dataclasses import replace

    from ingress.app import create_app

    small = create_app(replace(settings, max_webhook_bytes=2048), tenants, configure_logs=False).test_client()
    body = inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "x" * 5000})
    resp = post(small, body)
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "request_entity_too_large"


def test_redis_unreachable_is_503_so_infobip_retries(settings, tenants):
    from dataclasses import replace

    from ingress.app import create_app

    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"), tenants, configure_logs=False)
    resp = post(down.test_client(), inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "hi"}))
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "queue_unavailable"


def test_status_url_refuses_inbound_messages(client):
    resp = post(client, inbound(NUMBERS["alpha"], new_user(), {"type": "TEXT", "text": "hi"}),
                path="/webhooks/infobip/status")
    assert resp.status_code == 400


def test_health_endpoints(client, settings, tenants):
    assert client.get("/health").get_json() == {"status": "ok"}
    resp = client.get("/webhooks/infobip/health")
    assert resp.status_code == 200
    assert resp.get_json()["redis"] is True and resp.get_json()["tenant_databases_unreachable"] == 0
    assert "tenant_databases" not in resp.get_json()  # the tenant list is not for strangers
    resp = client.get("/webhooks/infobip/health", headers=AUTH)
    assert resp.get_json()["tenant_databases"] == {t.tenant_id: "ok" for t in tenants}

    from dataclasses import replace

    from ingress.app import create_app

    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0"), tenants, configure_logs=False)
    resp = down.test_client().get("/webhooks/infobip/health")
    assert resp.status_code == 503 and resp.get_json()["redis"] is False
