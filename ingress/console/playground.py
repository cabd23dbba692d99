"""The console's Playground (issue 14): an operator chats with the tenant's bot from the browser, without a WhatsApp
number, through the real pipeline, as their own playground user.

Each operator has one playground user (shared.db.users.playground_phone: 20 digits starting with 999, a number no
WhatsApp account has; `users.playground` is generated from it, migration 0017). What they write takes the webhook's
path step by step, with the webhook's guarantees:
- here: the message becomes an Infobip-shaped inbound result with a fresh messageId, and ONE Redis script takes its
  dedupe claim, records it as accepted work and queues the store task on `inbound` (shared/queueing/dedupe.py): a
  2xx means Redis holds the task and its record, so it is stored at least once (a lost task is re-driven);
- the inbound worker stores it exactly once (unique messageId) and runs the user's debounced turn with the tenant's
  agents, tools, memory and documents; the reply, its outbox rows and the `answered` mark commit together: the
  message is answered exactly once (shared/conversation/turn.py);
- the outbox takes the reply like any other, but the playground user's "Infobip" is the PlaygroundClient
  (shared/delivery/outbox.py client_for_user): nothing reaches Infobip, no blue ticks, no typing; each send is
  recorded `delivered` to the playground.
Each reply keeps what its turn did (agent, intent, tools, tokens) in `messages.meta`; the page polls `messages.json`
and shows it. Usage rows of playground turns are marked `playground` (they count toward the daily budget: see
shared/db/usage.py). "Reset" forgets the playground user and everything of theirs (history, memory, reminders).

`wabot chat` uses the same playground users through the real webhook (devtools/cli.py): it reads how its message
was answered from `turn`, below, authenticated with the webhook token it posted with."""
from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone

from flask import g, jsonify, redirect, render_template, request, url_for
from redis.exceptions import RedisError

from ingress.admin_api.context import admin_context, unit_of_work
from ingress.auth import presented_token, token_matches
from ingress.console.auth import bp, signed_in
from ingress.state import state
from shared.db import messages, users
from shared.queueing import accepted, dedupe
from shared.queueing.tasks import TASK_HANDLE_INBOUND, task_message

log = logging.getLogger("ingress.console.playground")
MAX_TEXT = 4000       # characters of one playground message
PAGE = 200            # messages per poll


def operator_phone() -> str:
    """The signed-in operator's playground number."""
    return users.playground_phone(f"operator:{g.console.operator_id}")


def inbound_result(tenant, phone: str, text: str, name: str) -> dict:
    """One inbound text message exactly as Infobip's webhook carries it (what the worker stores)."""
    now = datetime.now(timezone.utc)
    return {"from": phone, "to": tenant.waba_number, "integrationType": "WHATSAPP",
            "receivedAt": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000",
            "messageId": f"playground-{uuid.uuid4()}", "message": {"type": "TEXT", "text": text},
            "contact": {"name": name}}


def enqueue_inbound(tenant, result: dict, request_id: str) -> None:
    """The webhook's step (ingress/webhooks.py _publish) for one result: dedupe claim, accepted record and the store
    task in one atomic Redis script. At-least-once from here on; raises RedisError when Redis did not take it."""
    payload = {"tenant_id": tenant.tenant_id, "request_id": request_id, "message_id": result["messageId"],
               "result": result}
    task_id = str(uuid.uuid4())
    queue, message = task_message(state().celery, TASK_HANDLE_INBOUND, payload, task_id)
    item = accepted.Accepted(task_id, TASK_HANDLE_INBOUND, queue, payload)
    dedupe.claim_record_push(state().redis, [(item, dedupe.key(tenant.tenant_id, result["messageId"]), message)],
                             time.time(), state().settings.accepted_redrive_seconds)


def _shown(row: dict) -> dict:
    """A message as the page (and `wabot chat`) shows it."""
    meta = row.get("meta") or {}
    return {"id": row["id"], "role": row["role"], "text": row["body"] or "", "status": row["status"],
            "message_id": row["infobip_message_id"], "at": row["created_at"].isoformat(),
            "agent": meta.get("agent"), "intent": meta.get("intent"), "tools": meta.get("tools_used") or [],
            "tokens": (meta.get("token_usage") or {}) if meta else None,
            "llm_calls": meta.get("llm_calls"), "passages": meta.get("passages") or []}


def _conversation(tenant, phone: str, after: int) -> list[dict]:
    with admin_context().pools.connection(tenant) as conn:
        user_id = users.playground_user_id(conn, phone)
        rows = messages.conversation_after(conn, user_id, after, PAGE, newest=True) if user_id else []
    return [_shown(r) for r in rows]


@bp.route("/t/<tenant_id>/playground")
@signed_in
def playground():
    return render_template("console/playground.html", title="Playground", phone=operator_phone(),
                           conversation=_conversation(g.tenant, operator_phone(), 0), error=request.args.get("error"))


@bp.route("/t/<tenant_id>/playground/messages.json")
@signed_in
def playground_messages():
    after = request.args.get("after", "0")
    return jsonify({"phone": operator_phone(),
                    "messages": _conversation(g.tenant, operator_phone(), int(after) if after.isdigit() else 0)})


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


@bp.route("/t/<tenant_id>/playground/messages", methods=["POST"])
@signed_in
def playground_send():
    data = (request.get_json(silent=True) or {}) if request.is_json else request.form
    text = str(data.get("text") or "").strip()
    error, status = None, 202
    if not text or len(text) > MAX_TEXT:
        error, status = ("Write a message first." if not text
                         else f"A playground message has at most {MAX_TEXT} characters."), 400
    result = inbound_result(g.tenant, operator_phone(), text, g.console.operator)
    if error is None:
        try:
            enqueue_inbound(g.tenant, result, g.request_id)
            log.info("playground message enqueued", extra={"message_id": result["messageId"]})
        except (RedisError, OSError) as exc:
            log.error("playground message not enqueued", extra={"error": exc.__class__.__name__})
            error, status = "The bot's queue is unreachable; try again in a moment.", 503
    if _wants_json():
        return jsonify({"error": error} if error else {"message_id": result["messageId"]}), status
    return redirect(url_for("console.playground", tenant_id=g.tenant.tenant_id, **({"error": error} if error else {})))


@bp.route("/t/<tenant_id>/playground/reset", methods=["POST"])
@signed_in
def playground_reset():
    """Forget this operator's playground user: history, memory, reminders, sends (usage rows stay, marked)."""
    with unit_of_work(g.request_id).transaction(g.tenant) as tx:
        user_id = users.playground_user_id(tx.conn, operator_phone())
        if user_id is not None:
            messages.wait_for_turn_lock(tx.conn, user_id)  # never under a running turn of this user
            users.delete_playground_user(tx.conn, user_id)
    log.info("playground reset", extra={"had_user": user_id is not None})
    if _wants_json():
        return jsonify({"reset": True})
    return redirect(url_for("console.playground", tenant_id=g.tenant.tenant_id))


@bp.route("/playground/<tenant_id>/turns/<message_id>")
def playground_turn(tenant_id: str, message_id: str):
    """For `wabot chat`: how the message `message_id` of a playground user was answered. Authenticated like the
    webhook it was posted to (the webhook token, or the tenant's own); only playground users are shown. `done` once
    the message left `received` (answered, failed, held, ...): its turn committed, and `replies` holds every message
    the bot (or a person) wrote to the user after it (after `after`, when given)."""
    tenant = state().tenants.get(tenant_id)
    token = presented_token(request)
    if tenant is None or not (token_matches(token, state().settings.webhook_verify_token)
                              or token_matches(token, tenant.webhook_token)):
        return jsonify({"error": "unauthorized"}), 401
    after = request.args.get("after", "0")
    with admin_context().pools.connection(tenant) as conn:
        row = messages.get_by_infobip_id(conn, message_id)
        if row is None or not users.is_playground(conn, row["user_id"]):
            return jsonify({"message": None, "done": False, "replies": []})
        later = messages.conversation_after(conn, row["user_id"], max(row["id"], int(after) if after.isdigit() else 0))
    replies = [_shown(r) for r in later if r["role"] in ("assistant", "operator")]
    return jsonify({"message": _shown(row), "done": row["status"] != "received", "replies": replies})
