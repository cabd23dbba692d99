"""Turn any inbound WhatsApp message object into the text a turn works with.

Every type is stored as it came; this decides what the LLM reads. Types the bot cannot read (media without a
caption, unknown types) give None, and the turn answers with the tenant's polite "can't read that" text.
"""
from __future__ import annotations

from typing import Any


def message_text(message: dict[str, Any]) -> str | None:
    mtype = str(message.get("type") or "").upper()
    if mtype == "TEXT":
        return (message.get("text") or "").strip() or None
    if mtype in ("IMAGE", "DOCUMENT", "VIDEO", "AUDIO", "VOICE"):
        caption = (message.get("caption") or "").strip()
        return f"[{mtype.lower()}] {caption}" if caption else None
    if mtype in ("INTERACTIVE_BUTTON_REPLY", "INTERACTIVE_LIST_REPLY"):
        return (message.get("title") or message.get("id") or "").strip() or None
    if mtype == "BUTTON":
        return (message.get("text") or message.get("payload") or "").strip() or None
    if mtype == "LOCATION":
        parts = [f"My location: latitude {message.get('latitude')}, longitude {message.get('longitude')}"]
        if message.get("name"):
            parts.append(f"place: {message['name']}")
        if message.get("address"):
            parts.append(f"address: {message['address']}")
        return "; ".join(parts)
    if mtype == "CONTACT":
        names = []
        for c in message.get("contacts") or []:
            name = (c.get("name") or {}).get("formattedName") or (c.get("name") or {}).get("firstName")
            phones = ", ".join(p.get("phone", "") for p in c.get("phones") or [] if p.get("phone"))
            names.append(f"{name or 'contact'} ({phones})" if phones else (name or "contact"))
        return "Shared contact: " + "; ".join(names) if names else None
    if mtype == "REACTION":
        return None  # a reaction is stored but starts no turn
    return None
