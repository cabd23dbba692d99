"""The console's Conversations pages (issue 14): the list (state, last message, unread count, search, state
filter, paging) and one conversation (every message with its role, type, time and delivery status; take over, hand
back, send as operator within the 24-hour window, export, forget with a confirm step).

Pages are server-rendered and work without JavaScript (plain forms, post/redirect/get); static/conversations.js
polls the two small JSON endpoints about once a second and re-renders from the same view dicts the templates use,
so what the JSON says is what the page shows. The actions themselves are the admin API's (ingress/admin_api/
actions.py, shared/privacy/requests.py): the console adds no logic of its own but the read marks (unread counts)."""
from __future__ import annotations

import json
from datetime import datetime

from flask import Response, abort, g, jsonify, redirect, render_template, request, url_for

from ingress.admin_api import actions
from ingress.admin_api.context import admin_context
from ingress.console.auth import bp, signed_in
from shared.clock import utcnow
from shared.db import console_reads, user_data
from shared.delivery.infobip.templates import reengage_template
from shared.delivery.outbox import NO_TEMPLATE_REASON, WINDOW, WINDOW_MARGIN, inside_window
from shared.handoff.state import hand_back, take_over
from shared.privacy.requests import export_user, forget_user
from shared.phone import phone_fragment

PER_PAGE = 25
MESSAGES_SHOWN = 500          # a conversation page shows the newest 500 messages (and says when there are more)
CLIP = 90                     # characters of the last message shown in the list
MAX_TEXT = 4096               # an operator's message, like the admin API's limit
STATES = {"bot": "Bot", "human": "Human", "opted_out": "Opted out"}
ROLES = {"user": "user", "assistant": "bot", "operator": "operator", "system": "system"}
FAILED = {"failed", "not_sent", "undeliverable", "expired", "rejected"}
STATUS_ORDER = ["failed", "queued", "sent", "delivered", "seen"]  # a message is as far as its least advanced part
NOTICES = {"taken": "You took the conversation over: the bot stays quiet until you hand it back.",
           "handed": "The bot answers again.", "sent": "Message queued for sending.",
           "unchanged": "Nothing changed: the conversation was already in that state.",
           "forgotten": "The user was erased: their messages and data are gone."}
REFUSALS = {"outside_window": NO_TEMPLATE_REASON, "opted_out": "the user opted out (sent a stop keyword)",
            "empty": "the message is empty", "unknown_user": "the user no longer exists"}


def _actor() -> str:
    return f"operator:{g.console.operator}"


def _when(moment: datetime | None) -> str:
    """A time as the business reads it: in the tenant's timezone."""
    return moment.astimezone(g.tenant.config.tz).strftime("%Y-%m-%d %H:%M") if moment else ""


def _clip(text: str | None, limit: int = CLIP) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ------------------------------------------------------------ the list

def _list_args() -> dict:
    """The list's query: search text, state filter, page (bad values fall back to the defaults)."""
    state = request.args.get("state", "")
    page = request.args.get("page", "1")
    return {"q": request.args.get("q", "").strip()[:100], "state": state if state in STATES else "",
            "page": max(1, min(int(page), 10_000)) if page.isdigit() else 1}


def _row_view(row: dict, unread: int) -> dict:
    return {"user_id": row["user_id"], "name": row["name"] or "", "phone": row["phone"], "state": row["state"],
            "state_label": STATES.get(row["state"], row["state"]), "unread": unread,
            "last_role": ROLES.get(row["last_message_role"], row["last_message_role"] or ""),
            "last_text": _clip(row["last_message_body"]), "last_at": _iso(row["last_message_at"]),
            "last_at_text": _when(row["last_message_at"]),
            "url": url_for("console.conversation", tenant_id=g.tenant.tenant_id, user_id=row["user_id"])}


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _list_data(args: dict) -> dict:
    """One page of conversations, newest activity first, each with its unread count (the admin API's query)."""
    q = args["q"]
    digits = phone_fragment(q)
    with admin_context().pools.connection(g.tenant) as conn:
        rows = user_data.list_conversations(conn, state=args["state"] or None, search=q or None,
                                            digits=digits, limit=PER_PAGE + 1,
                                            offset=(args["page"] - 1) * PER_PAGE)
        unread = console_reads.unread_counts(conn, [r["user_id"] for r in rows[:PER_PAGE]])
    return {"conversations": [_row_view(r, unread.get(r["user_id"], 0)) for r in rows[:PER_PAGE]],
            "page": args["page"], "next_page": args["page"] + 1 if len(rows) > PER_PAGE else None}


def _page_url(args: dict, page: int | None) -> str | None:
    if page is None or page < 1:
        return None
    query = {k: v for k, v in (("q", args["q"]), ("state", args["state"])) if v}
    return url_for("console.conversations", tenant_id=g.tenant.tenant_id, page=page, **query)


@bp.route("/t/<tenant_id>/conversations")
@signed_in
def conversations():
    args = _list_args()
    data = _list_data(args)
    query = {k: v for k, v in args.items() if v}
    return render_template("console/conversations.html", title="Conversations", args=args, states=STATES,
                           rows=data["conversations"], notice=NOTICES.get(request.args.get("notice", "")),
                           source=url_for("console.conversations_json", tenant_id=g.tenant.tenant_id, **query),
                           prev_url=_page_url(args, args["page"] - 1 if args["page"] > 1 else None),
                           next_url=_page_url(args, data["next_page"]))


@bp.route("/t/<tenant_id>/conversations.json")
@signed_in
def conversations_json():
    return jsonify(_list_data(_list_args()))


# ------------------------------------------------------------ one conversation

def _error_text(error: dict) -> str:
    """Infobip's error as words: a refused post ({code, description}) or a report's ({name, description})."""
    name = error.get("name") or error.get("code") or ""
    description = error.get("description") or error.get("text") or ""
    return ": ".join(p for p in (str(name), str(description)) if p)


def _delivery_view(parts: list[dict], errors: list[dict]) -> dict:
    """One status for a message however many parts carried it: the least advanced one, and why it failed."""
    if not parts:
        return {"status": "", "status_text": ""}
    kinds = {p["kind"] for p in parts}
    failed = [p for p in parts if p["status"] in FAILED]
    if failed:
        why = failed[0]["reason"] or "; ".join(_error_text(e) for e in errors) or failed[0]["status"]
        status, text = "failed", f"{failed[0]['status'].replace('_', ' ')}: {why}"
    else:
        status = min((p["status"] for p in parts),
                     key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 0)
        text = status
    return {"status": status, "status_text": text + (" (as template)" if "template" in kinds else "")}


def _message_view(m: dict, errors: list[dict]) -> dict:
    at = m["received_at"] or m["created_at"]
    view = {"id": m["id"], "role": ROLES.get(m["role"], m["role"]), "type": (m["message_type"] or "text").lower(),
            "body": m["body"] or "", "at": _iso(at), "at_text": _when(at)}
    view.update(_delivery_view(m["delivery"], errors) if m["role"] != "user" else {"status": "", "status_text": ""})
    return view


def _window_view(conv: dict) -> dict:
    """What the operator may send now: text inside WhatsApp's 24-hour window, only a template outside it."""
    last = conv["last_inbound_at"]
    if conv["state"] == "opted_out":
        return {"open": False, "text": "The user opted out: nothing can be sent to them until they write START."}
    if inside_window(last, utcnow()):
        return {"open": True, "text": f"The 24-hour window is open until {_when(last + WINDOW - WINDOW_MARGIN)}: "
                                      "your message goes out as you type it."}
    since = f"the user last wrote {_when(last)}" if last else "the user never wrote"
    template = reengage_template(g.tenant)
    if template is not None:
        return {"open": False, "text": f"The 24-hour window is closed ({since}): only the template "
                                       f"'{template.name}' can go; your text is placed into it."}
    return {"open": False, "text": f"The 24-hour window is closed ({since}): only a template can go, and this "
                                   "business has none, so a message will be refused."}


def _conversation_data(user_id: int) -> dict | None:
    """The conversation, its newest messages oldest first, and its window; marks it read (the operator sees it)."""
    with admin_context().pools.connection(g.tenant) as conn:
        conv = user_data.conversation(conn, user_id)
        if conv is None:
            return None
        rows = user_data.messages_with_delivery(conn, user_id, before_id=None, limit=MESSAGES_SHOWN)[::-1]
        errors = console_reads.send_errors(conn, [m["id"] for m in rows if m["role"] != "user"])
        if rows:
            console_reads.mark_read(conn, user_id, rows[-1]["id"], g.console.operator_id)
    head = {"user_id": conv["user_id"], "name": conv["name"] or "", "phone": conv["phone"], "state": conv["state"],
            "state_label": STATES.get(conv["state"], conv["state"])}
    return {"conversation": head, "window": _window_view(conv), "more": len(rows) == MESSAGES_SHOWN,
            "messages": [_message_view(m, errors.get(m["id"], [])) for m in rows]}


def _render_conversation(user_id: int, *, error: str | None = None, text: str = ""):
    data = _conversation_data(user_id)
    if data is None:
        abort(404)
    urls = {name: url_for(f"console.conversation_{name}", tenant_id=g.tenant.tenant_id, user_id=user_id)
            for name in ("json", "send", "takeover", "handback", "export", "forget")}
    return render_template("console/conversation.html", title=data["conversation"]["name"] or "Conversation",
                           data=data, urls=urls, error=error, text=text, max_text=MAX_TEXT,
                           notice=NOTICES.get(request.args.get("notice", "")))


@bp.route("/t/<tenant_id>/conversations/<int:user_id>")
@signed_in
def conversation(user_id: int):
    return _render_conversation(user_id)


@bp.route("/t/<tenant_id>/conversations/<int:user_id>.json")
@signed_in
def conversation_json(user_id: int):
    data = _conversation_data(user_id)
    if data is None:
        abort(404)
    return jsonify(data)


# ------------------------------------------------------------ actions (forms; post/redirect/get)

def _back(user_id: int, notice: str):
    return redirect(url_for("console.conversation", tenant_id=g.tenant.tenant_id, user_id=user_id, notice=notice))


def _switch(user_id: int, switch, done: str):
    try:
        result = actions.switch_state(g.tenant, g.get("request_id"), user_id, switch, by=_actor(),
                                      reason=request.form.get("reason", "")[:500] or "from the console")
    except actions.NoSuchUser:
        abort(404)
    return _back(user_id, done if result["changed"] else "unchanged")


@bp.route("/t/<tenant_id>/conversations/<int:user_id>/takeover", methods=["POST"])
@signed_in
def conversation_takeover(user_id: int):
    return _switch(user_id, take_over, "taken")


@bp.route("/t/<tenant_id>/conversations/<int:user_id>/handback", methods=["POST"])
@signed_in
def conversation_handback(user_id: int):
    return _switch(user_id, hand_back, "handed")


@bp.route("/t/<tenant_id>/conversations/<int:user_id>/send", methods=["POST"])
@signed_in
def conversation_send(user_id: int):
    """Send as the operator; a refusal is shown on the page with its reason, the text kept to edit. (Answered 200,
    not 409: a page answered with an error status is logged by the browser as a console error.)"""
    text = request.form.get("text", "")
    if len(text) > MAX_TEXT:
        return _render_conversation(user_id, error=f"The message is longer than {MAX_TEXT} characters.",
                                    text=text)
    try:
        actions.send_message(g.tenant, g.get("request_id"), user_id, str(g.console.operator_id), text)
    except actions.NoSuchUser:
        abort(404)
    except actions.SendRefused as refused:
        reason = REFUSALS.get(refused.reason, refused.reason)
        return _render_conversation(user_id, error=f"Not sent: {reason}.", text=text)
    return _back(user_id, "sent")


@bp.route("/t/<tenant_id>/conversations/<int:user_id>/export", methods=["POST"])
@signed_in
def conversation_export(user_id: int):
    """Everything stored about the user as a JSON download (audited, like the admin API's export)."""
    with admin_context().pools.connection(g.tenant) as conn:
        data = export_user(conn, user_id, actor=_actor())
    if data is None:
        abort(404)
    body = json.dumps(data, ensure_ascii=False, indent=2)
    return Response(body, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="{g.tenant.tenant_id}-user-{user_id}.json"'})


@bp.route("/t/<tenant_id>/conversations/<int:user_id>/forget", methods=["GET", "POST"])
@signed_in
def conversation_forget(user_id: int):
    """GET: the confirm step; POST: erase the user (shared.privacy.requests.forget_user), back to the list."""
    if request.method == "GET":
        with admin_context().pools.connection(g.tenant) as conn:
            conv = user_data.conversation(conn, user_id)
        if conv is None:
            abort(404)
        return render_template("console/conversation_forget.html", title="Forget this user", conv=conv,
                               back=url_for("console.conversation", tenant_id=g.tenant.tenant_id, user_id=user_id))
    with admin_context().pools.connection(g.tenant) as conn:
        deleted = forget_user(conn, user_id, actor=_actor(), now=utcnow())
    if deleted is None:
        abort(404)
    return redirect(url_for("console.conversations", tenant_id=g.tenant.tenant_id, notice="forgotten"))
