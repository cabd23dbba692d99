"""Delivery and seen reports: applied to the outbox row they name, kept when that row is not known yet, and the
template fallback when a report says the chat window was closed.

Guarantees:
- applying a report is idempotent and order-safe (a message never moves back: see repo.STATUS_RANK);
- a report is never dropped: without its row it is stored in `pending_reports`. Both sides look again after their
  own commit (the report side after storing, the send side after recording Infobip's answer), so whichever
  commits second finds the other's work and the report is applied exactly once (taking it deletes it);
- a closed-window report triggers at most one template per reply (unique index on `fallback_of`), and never for a
  template, so the fallback cannot loop;
- order: later messages of the user that waited for the reply's dropped parts wait for its template instead.
"""
from __future__ import annotations

import logging
from shared.db import repo
from shared.db.unit_of_work import Transaction, UnitOfWork
from shared.delivery.infobip.errors import is_session_error
from shared.delivery.infobip.templates import reengage_template
from shared.delivery.infobip.times import parse_infobip_time
from shared.delivery.outbox import new_message_id, template_content
from shared.config.tenants import Tenant

log = logging.getLogger(__name__)

REPORT_KINDS = ("delivery", "seen")
NO_TEMPLATE_FALLBACK = "the chat window is closed and the tenant has no 'reengage' template to send instead"


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
        row = repo.apply_seen_report(conn, message_id, parse_infobip_time(report.get("seenAt")))
    else:
        row = repo.apply_delivery_report(conn, message_id, report)
    if row is None:
        repo.store_pending_report(conn, message_id, kind, report)
        log.info("report kept until its message is known", extra={"infobip_message_id": message_id, "kind": kind})
        return False
    if kind == "delivery" and row.get("applied") and is_session_error(report.get("error")):
        fall_back_to_template(tx, row)
    return True


def settle_pending_reports(tx: Transaction, message_id: str) -> None:
    """Apply the reports kept for `message_id` once its row exists (template fallbacks registered on `tx`)."""
    if not repo.outbound_exists(tx.conn, message_id):
        return
    for kept in repo.take_pending_reports(tx.conn, message_id):
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
        repo.set_outbound_reason(conn, row["id"], NO_TEMPLATE_FALLBACK)
        log.warning("chat window closed and no template to fall back to", extra={"outbound_id": row["id"]})
        return
    text = "\n\n".join(p["body"] for p in repo.chain_parts(conn, head_id) if p["body"])
    user = repo.outbound_user(conn, row["user_id"]) or {}
    mid = new_message_id(tenant.tenant_id)
    content = template_content(tenant, template, phone=row["to_number"], message_id=mid, text=text,
                               name=user.get("name"))
    fallback_id = repo.create_fallback_outbound(conn, fallback_of=head_id, message_id=mid, user_id=row["user_id"],
                                                to_number=row["to_number"], body=text, content=content,
                                                request_id=row.get("request_id"))
    if fallback_id is None:
        return  # another part's report already made the fallback
    stopped = repo.stop_queued_parts(conn, head_id, 0, "not_sent", "replaced by the template fallback")
    repo.repoint_waiters(conn, stopped, fallback_id)  # later messages still come after this reply
    repo.set_outbound_reason(conn, row["id"], f"chat window closed: sent again as template {template.name}")
    log.info("chat window closed: falling back to the template",
             extra={"outbound_id": row["id"], "fallback_id": fallback_id, "template": template.name})
    tx.send_after_commit([fallback_id])
