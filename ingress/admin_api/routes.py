"""The admin API's endpoints, under /api/v1/tenants/<tenant_id>/ (see ingress/admin_api/api.py for who may call
them). Conversations: list, show, messages with delivery status, take over, hand back, send as operator, opt-out
status; users: look up by phone, export, forget; usage per day."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from flask import g

from ingress.admin_api import actions, schemas as s
from ingress.admin_api.api import ApiError, actor, api_route
from ingress.admin_api.context import admin_context
from shared.clock import utcnow
from shared.config.prices import bills_by_day
from shared.db import console_usage, user_data
from shared.handoff.operator import SendRefused
from shared.handoff.state import hand_back, take_over
from shared.phone import normalize_number, phone_fragment
from shared.privacy.requests import export_user, forget_user

USAGE_DEFAULT_DAYS = 30


def _connection():
    return admin_context().pools.connection(g.admin_tenant)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such user in this tenant")


@api_route("/conversations", "GET", summary="List conversations (filter by state, search, paginate)",
           query=s.ConversationListQuery, response=s.ConversationPage)
def list_conversations(query: dict):
    q = query.get("q")
    digits = phone_fragment(q)
    with _connection() as conn:
        rows = user_data.list_conversations(conn, state=query.get("state"), search=q, digits=digits or None,
                                            limit=query["per_page"] + 1,
                                            offset=(query["page"] - 1) * query["per_page"])
    more = len(rows) > query["per_page"]
    return {"conversations": rows[:query["per_page"]], "page": query["page"], "per_page": query["per_page"],
            "next_page": query["page"] + 1 if more else None}


@api_route("/conversations/<int:user_id>", "GET", summary="One conversation", response=s.Conversation)
def show_conversation(user_id: int):
    with _connection() as conn:
        row = user_data.conversation(conn, user_id)
    if row is None:
        raise _not_found()
    return row


@api_route("/conversations/<int:user_id>/messages", "GET", summary="A conversation's messages with delivery status",
           query=s.MessagesQuery, response=s.MessagePage)
def conversation_messages(user_id: int, query: dict):
    with _connection() as conn:
        if user_data.conversation(conn, user_id) is None:
            raise _not_found()
        rows = user_data.messages_with_delivery(conn, user_id, before_id=query.get("before"), limit=query["limit"])
    return {"messages": rows, "next_before": rows[-1]["id"] if len(rows) == query["limit"] else None}


def _switch(user_id: int, switch, reason: str) -> dict:
    try:
        return actions.switch_state(g.admin_tenant, g.get("request_id"), user_id, switch, by=actor(), reason=reason)
    except actions.NoSuchUser:
        raise _not_found() from None


@api_route("/conversations/<int:user_id>/takeover", "POST", summary="A person takes the conversation over",
           body=s.ReasonBody, response=s.StateChange)
def takeover(user_id: int, body: dict):
    return _switch(user_id, take_over, body["reason"])


@api_route("/conversations/<int:user_id>/handback", "POST", summary="Hand the conversation back to the bot",
           body=s.ReasonBody, response=s.StateChange)
def handback(user_id: int, body: dict):
    return _switch(user_id, hand_back, body["reason"])


@api_route("/conversations/<int:user_id>/messages", "POST", summary="Send a message as the operator",
           body=s.SendBody, response=s.Sent, status=202)
def send_message(user_id: int, body: dict):
    try:
        outbound_id = actions.send_message(g.admin_tenant, g.get("request_id"), user_id,
                                           str(g.admin_operator["id"]), body["text"])
    except actions.NoSuchUser:
        raise _not_found() from None
    except SendRefused as refused:
        raise ApiError(409, "send_refused", f"the message cannot be sent: {refused.reason}") from None
    return {"user_id": user_id, "message_id": outbound_id}


@api_route("/conversations/<int:user_id>/opt-out", "GET", summary="Whether the user opted out of messages",
           response=s.OptOut)
def opt_out_status(user_id: int):
    with _connection() as conn:
        row = user_data.conversation(conn, user_id)
    if row is None:
        raise _not_found()
    opted_out = row["state"] == "opted_out"
    return {"user_id": user_id, "state": row["state"], "opted_out": opted_out,
            "since": row["state_changed_at"] if opted_out else None}


@api_route("/users/lookup", "GET", summary="The user id of a phone number", query=s.PhoneQuery, response=s.UserRef)
def lookup_user(query: dict):
    try:
        phone = normalize_number(query["phone"])
    except ValueError:
        raise ApiError(400, "invalid_input", "phone is not a phone number") from None
    with _connection() as conn:
        user_id = user_data.user_id_by_phone(conn, phone)
    if user_id is None:
        raise _not_found()
    return {"user_id": user_id}


@api_route("/users/<int:user_id>/export", "GET", summary="Everything stored about one user", response=s.Export)
def export(user_id: int):
    with _connection() as conn:
        data = export_user(conn, user_id, actor=actor())
    if data is None:
        raise _not_found()
    return data


@api_route("/users/<int:user_id>/forget", "POST", summary="Erase one user (usage counts stay, anonymised)",
           response=s.Forgotten)
def forget(user_id: int):
    with _connection() as conn:
        deleted = forget_user(conn, user_id, actor=actor(), now=utcnow())
    if deleted is None:
        raise _not_found()
    return {"user_id": user_id, "deleted": deleted}


def _local_midnight(day: date, tz) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


@api_route("/usage", "GET", summary="LLM calls and tokens per tenant-local day", query=s.UsageQuery,
           response=s.Usage)
def usage(query: dict):
    tenant = g.admin_tenant
    today = utcnow().astimezone(tenant.config.tz).date()
    until = query.get("until") or today
    since = query.get("since") or until - timedelta(days=USAGE_DEFAULT_DAYS - 1)
    if until < since or (until - since).days >= s.MAX_USAGE_DAYS:
        raise ApiError(400, "invalid_input", f"'to' must be on or after 'from', at most {s.MAX_USAGE_DAYS} days later")
    with _connection() as conn:
        window = {"timezone": tenant.config.timezone, "since": _local_midnight(since, tenant.config.tz),
                  "until": _local_midnight(until + timedelta(days=1), tenant.config.tz)}
        days = user_data.usage_per_day(conn, **window)
        bills = bills_by_day(console_usage.per_model(conn, **window), tenant.prices)  # cached tokens, billed cost
    return {"days": [{**d, **bills[d["day"]].as_json()} for d in days]}
