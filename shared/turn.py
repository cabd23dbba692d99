"""One conversation turn: store the inbound message, ask the tenant's LLM, store the reply in the outbox.

Guarantees of this step:
- the inbound message is stored exactly once per Infobip messageId (unique index), whatever the redeliveries;
- a message already answered is not answered again (a redelivered task returns no sends);
- the reply, its outbox rows and the `answered` mark are committed in one transaction, and the caller enqueues
  the sends only after that commit.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from shared.db import repo
from shared.db.pools import TenantPools
from shared.llm.base import LLMProvider
from shared.message_text import message_text
from shared.outbox import new_message_id
from shared.infobip.client import text_body
from shared.phone import normalize_number
from shared.tenants import Tenant

log = logging.getLogger(__name__)

DEFAULT_UNREADABLE = "Sorry, I can't read this kind of message yet. Could you write it as text?"
HISTORY_MESSAGES = 20


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_infobip_time(value: Any) -> datetime | None:
    """Infobip writes `2025-01-01T10:10:00.000+0000` (offset without a colon)."""
    if not value:
        return None
    text = str(value)
    for fmt in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    except ValueError:
        return None


@dataclass
class TurnResult:
    outbound_ids: list[int] = field(default_factory=list)
    duplicate: bool = False
    user_id: int | None = None


def system_prompt(tenant: Tenant, now: datetime) -> str:
    local = now.astimezone(tenant.config.tz)
    return (
        f"You are the WhatsApp assistant of {tenant.config.business_name}. "
        f"Now it is {local:%A %Y-%m-%d %H:%M} ({tenant.config.timezone}). "
        "Answer briefly and in the user's language."
    )


def run_turn(tenant: Tenant, pools: TenantPools, llm: LLMProvider, result: dict, request_id: str | None,
             clock: Callable[[], datetime] = utcnow) -> TurnResult:
    started = time.monotonic()
    message = result.get("message") or {}
    phone = normalize_number(result["from"])
    contact = result.get("contact") or {}
    received_at = parse_infobip_time(result.get("receivedAt")) or clock()
    text = message_text(message)
    mtype = str(message.get("type") or "UNKNOWN").upper()

    with pools.connection(tenant) as conn:
        user_id = repo.upsert_user(conn, phone, contact.get("name"), received_at)
        inbound_id = repo.insert_inbound(conn, user_id=user_id, infobip_message_id=result["messageId"],
                                         message_type=mtype, body=text, payload=message, received_at=received_at,
                                         request_id=request_id)
        if inbound_id is None:
            stored = repo.get_message_by_infobip_id(conn, result["messageId"])
            if stored["status"] != "received":
                log.info("duplicate inbound message ignored", extra={"status": stored["status"]})
                return TurnResult(duplicate=True, user_id=user_id)
            inbound_id = stored["id"]  # stored by an attempt that died before answering: answer it now
        history = repo.recent_history(conn, user_id, HISTORY_MESSAGES, before_id=inbound_id)

    if mtype == "REACTION":
        with pools.connection(tenant) as conn:
            repo.set_message_status(conn, inbound_id, "ignored")
        return TurnResult(user_id=user_id)

    tools_used: list[str] = []
    usage = None
    if text is None:
        reply = str(tenant.config.extra.get("unreadable_message_reply") or DEFAULT_UNREADABLE)
    else:
        messages = [{"role": "system", "content": system_prompt(tenant, clock())}]
        messages += [{"role": r["role"], "content": r["body"]} for r in history]
        messages.append({"role": "user", "content": text})
        t0 = time.monotonic()
        answer = llm.chat(messages)
        latency_ms = int((time.monotonic() - t0) * 1000)
        usage = answer.usage
        reply = (answer.content or "").strip() or "Sorry, I have no answer to that."

    with pools.connection(tenant) as conn:
        if usage is not None:
            repo.record_usage(conn, user_id=user_id, request_id=request_id, provider=llm.name, model=llm.model,
                              prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                              latency_ms=latency_ms, tools_used=tools_used)
        reply_id = repo.insert_assistant_message(conn, user_id=user_id, body=reply, reply_to=inbound_id,
                                                 request_id=request_id)
        mid = new_message_id(tenant.tenant_id)
        outbound_id = repo.create_outbound(
            conn, message_id=mid, user_id=user_id, to_number=phone, body=reply, source_message=reply_id,
            content=text_body(sender=tenant.waba_number, to=phone, text=reply, message_id=mid),
            request_id=request_id,
        )
        repo.set_message_status(conn, inbound_id, "answered")

    log.info("message processed successfully", extra={
        "duration": f"{time.monotonic() - started:.3f}s",
        "tools_used": tools_used,
        "token_usage": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens,
                        "total": usage.total_tokens} if usage else {"total": 0},
    })
    return TurnResult(outbound_ids=[outbound_id], user_id=user_id)
