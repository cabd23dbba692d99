"""Delivery and seen reports: applied to the outbox row they name, kept when that row is not known yet, and the
template fallback when a report says the chat window was closed.

Guarantees:
- applying a report is idempotent and order-safe (a message never moves back: see STATUS_RANK);
- a report is never dropped: without its row it is stored in `pending_reports`. Both sides look again after their
  own commit (the report side after storing, the send side after recording Infobip's answer), so whichever
  commits second finds the other's work and the report is applied exactly once (taking it deletes it);
- a closed-window report triggers at most one template per reply (unique index on `fallback_of`), and never for a
  template, so the fallback cannot loop;
- order: later messages of the user that waited for the reply's dropped parts wait for its template instead.
"""
from __future__ import annotations

import logging

import psycopg

from shared.db import outbound, pending_reports, users
from shared.db.unit_of_work import Transaction, UnitOfWork
from shared.delivery.infobip.errors import is_session_error
from shared.delivery.infobip.templates import reengage_template
from shared.delivery.infobip.times import parse_infobip_time
from shared.delivery.outbox import new_message_id, template_content
from shared import metrics
from shared.clock import utcnow
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

REPORT_KINDS = ("delivery", "seen")
NO_TEMPLATE_FALLBACK = "the chat window is closed and the tenant has no 'reengage' template to send instead"
# Outbound statuses ordered by how far a message got; a report never moves a message backwards.
STATUS_RANK = {"queued": 0, "failed": 1, "not_sent": 1, "sent": 2, "undeliverable": 3, "expired": 3,
               "rejected": 3, "delivered": 4, "seen": 5}
REPORT_STATUS = {"PENDING": "sent", "UNDELIVERABLE": "undeliverable", "DELIVERED": "delivered",
                 "EXPIRED": "expired", "REJECTED": "rejected"}


def apply_delivery_report(conn: psycopg.Connection, message_id: str, report: dict) -> dict | None:
    """Apply a delivery report; a report never moves a message back (a late PENDING after DELIVERED is ignored),
    and applying one twice changes nothing more.

    Returns the row (with `applied`: whether the report moved it) or None when no row has this messageId (yet).
    """
    group = ((report.get("status") or {}).get("groupName") or "").upper()
    new_status = REPORT_STATUS.get(group, "sent")
    error = report.get("error") or None
    if error and (error.get("id") in (0, "0") or error.get("name") == "NO_ERROR"):
        error = None
    row = outbound.lock_by_message_id(conn, message_id)
    if row is None:
        return None
    applied = STATUS_RANK.get(new_status, 0) >= STATUS_RANK.get(row["status"], 0)
    if applied:
        outbound.record_report(conn, row["id"], status=new_status, status_group=group or None,
                               status_name=(report.get("status") or {}).get("name"), error=error)
    return {**row, "status": new_status if applied else row["status"], "applied": applied}


def apply_report(tx: Transaction, kind: str, report: dict) -> bool:
    """Apply one report in `tx` (a template fallback's send is registered on it); False when it was kept in
    pending_reports because its message is not known yet."""
    if kind not in REPORT_KINDS:
        raise ValueError(f"unknown report kind {kind!r} (expected one of {', '.join(REPORT_KINDS)})")
    message_id = report.get("messageId") if isinstance(report, dict) else None
    if not message_id:
        raise ValueError("a report without a messageId cannot be matched to a message")
    conn = tx.conn
    if kind == "seen":
        row = outbound.record_seen(conn, message_id, parse_infobip_time(report.get("seenAt")))
    else:
        row = apply_delivery_report(conn, message_id, report)
    if row is not None:
        _count(tx.tenant.tenant_id, kind, report, row)
    if row is None:
        pending_reports.store(conn, message_id, kind, report)
        log.info("report kept until its message is known", extra={"infobip_message_id": message_id, "kind": kind})
        return False
    if kind == "delivery" and row.get("applied") and is_session_error(report.get("error")):
        fall_back_to_template(tx, row)
    return True


def _count(tenant_id: str, kind: str, report: dict, row: dict) -> None:
    """Metrics of an applied report: its status, and how long after Infobip's time it reached us."""
    at = parse_infobip_time(report.get("seenAt" if kind == "seen" else "doneAt"))
    lag = (utcnow() - at).total_seconds() if at is not None else None
    metrics.report(kind, "seen" if kind == "seen" else str(row.get("status") or "unknown"), lag, tenant_id)


def settle_pending_reports(tx: Transaction, message_id: str) -> None:
    """Apply the reports kept for `message_id` once its row exists (template fallbacks registered on `tx`)."""
    if not outbound.exists(tx.conn, message_id):
        return
    for kept in pending_reports.take(tx.conn, message_id):
        apply_report(tx, kept["kind"], kept["report"])


def receive_report(tenant: Tenant, uow: UnitOfWork, kind: str, report: dict) -> bool:
    """A report from the webhook: apply it (True), or keep it (False) and look once more after that commit (its
    send may have recorded its result meanwhile, and then nobody else would apply it)."""
    with uow.transaction(tenant) as tx:
        found = apply_report(tx, kind, report)
    if not found:
        settle_after_send(tenant, uow, report["messageId"])
    return found


def settle_after_send(tenant: Tenant, uow: UnitOfWork, message_id: str) -> None:
    """After a send recorded Infobip's answer (committed): apply the reports that overtook it."""
    with uow.transaction(tenant) as tx:
        settle_pending_reports(tx, message_id)


def fall_back_to_template(tx: Transaction, row: dict) -> None:
    """Send the whole reply of `row` again as the tenant's template, once; later queued parts are dropped."""
    conn, tenant = tx.conn, tx.tenant
    if row["kind"] != "text" or row.get("fallback_of") is not None:
        return  # a template (or a fallback) that fails is not retried as another template: no loops
    head_id = row.get("chain_id") or row["id"]
    template = reengage_template(tenant)
    if template is None:
        outbound.set_reason(conn, row["id"], NO_TEMPLATE_FALLBACK)
        log.warning("chat window closed and no template to fall back to", extra={"outbound_id": row["id"]})
        return
    text = "\n\n".join(p["body"] for p in outbound.chain_parts(conn, head_id) if p["body"])
    user = users.get_user(conn, row["user_id"]) or {}
    mid = new_message_id(tenant.tenant_id)
    content = template_content(tenant, template, phone=row["to_number"], message_id=mid, text=text,
                               name=user.get("name"))
    fallback_id = outbound.create_fallback(conn, fallback_of=head_id, message_id=mid, user_id=row["user_id"],
                                           to_number=row["to_number"], body=text, content=content,
                                           request_id=row.get("request_id"))
    if fallback_id is None:
        return  # another part's report already made the fallback
    stopped = outbound.stop_queued_parts(conn, head_id, 0, "not_sent", "replaced by the template fallback")
    outbound.repoint_waiters(conn, stopped, fallback_id)  # later messages still come after this reply
    outbound.set_reason(conn, row["id"], f"chat window closed: sent again as template {template.name}")
    log.info("chat window closed: falling back to the template",
             extra={"outbound_id": row["id"], "fallback_id": fallback_id, "template": template.name})
    tx.send_after_commit([fallback_id])
