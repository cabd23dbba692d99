"""Sending what the outbox holds, and the messageIds that tie Infobip's reports back to a tenant.

Guarantees: a send row is committed before its task is enqueued (so nothing is sent that was not stored); the
row is locked while it is posted and only a `queued` row is posted (so a redelivered send task does not post a
message Infobip already accepted); retries reuse the row and therefore the same messageId.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from shared.db import repo
from shared.db.pools import TenantPools
from shared.infobip.client import InfobipClient
from shared.tenants import Tenant

log = logging.getLogger(__name__)

PATHS = {
    "text": "/whatsapp/1/message/text",
    "template": "/whatsapp/1/message/template",
    "buttons": "/whatsapp/1/message/interactive/buttons",
}


def new_message_id(tenant_id: str) -> str:
    """Our Infobip messageId: `<tenant_id>.<uuid>`. Delivery reports carry no sender number, so the prefix is how
    the ingress finds the tenant of a report."""
    return f"{tenant_id}.{uuid.uuid4().hex}"


def tenant_of_message_id(message_id: str) -> str | None:
    head, sep, _ = (message_id or "").partition(".")
    return head if sep and head else None


@dataclass(frozen=True)
class SendOutcome:
    status: str               # sent | failed | skipped | retry
    retry_after: float | None = None
    error: dict | None = None


def client_for(tenant: Tenant) -> InfobipClient:
    return InfobipClient(tenant.infobip_base_url, tenant.infobip_api_key)


def send_outbound(tenant: Tenant, pools: TenantPools, client: InfobipClient, outbound_id: int,
                  last_attempt: bool) -> SendOutcome:
    with pools.connection(tenant) as conn:
        row = repo.lock_outbound(conn, outbound_id)
        if row is None:
            log.error("outbound message not found", extra={"outbound_id": outbound_id})
            return SendOutcome("skipped")
        if row["status"] != "queued":
            return SendOutcome("skipped")  # already accepted by Infobip (or given up): never post twice
        result = client.send(PATHS[row["kind"]], row["content"])
        if result.ok:
            repo.record_send_accepted(conn, outbound_id, result.body)
            log.info("sent to infobip", extra={"outbound_id": outbound_id, "infobip_message_id": row["message_id"],
                                               "http_status": result.http_status})
            return SendOutcome("sent")
        error = result.error.as_dict()
        final = last_attempt or not result.error.retryable
        repo.record_send_error(conn, outbound_id, error, final=final)
        log.warning("infobip send failed", extra={"outbound_id": outbound_id, "infobip_error": error,
                                                  "final": final})
        return SendOutcome("failed" if final else "retry", result.retry_after, error)
