"""Conversation actions shared by the admin API (routes.py) and the operator console (ingress/console): take over,
hand back, send as operator. Each is one unit of work: what it commits (notices, sends, the business's webhook)
is published after the commit. Callers map `NoSuchUser` and `SendRefused` to their own answers."""
from __future__ import annotations

from typing import Callable

from ingress.admin_api.context import unit_of_work
from shared.clock import utcnow
from shared.config.tenants import Tenant
from shared.db import user_data
from shared.handoff.operator import SendRefused, send_as_operator
from shared.handoff.state import conversation_state

__all__ = ["NoSuchUser", "SendRefused", "switch_state", "send_message"]


class NoSuchUser(Exception):
    """No user of this id in the tenant's database (never one, or erased)."""


def switch_state(tenant: Tenant, request_id: str | None, user_id: int, switch: Callable, *, by: str,
                 reason: str) -> dict:
    """Apply `switch` (shared.handoff.state.take_over or hand_back) as `by`; returns the new state and whether it
    changed."""
    uow = unit_of_work(request_id)
    with uow.transaction(tenant) as tx:
        if user_data.conversation(tx.conn, user_id) is None:
            raise NoSuchUser(user_id)
        changed = switch(tx, user_id, by=by, reason=reason or "")
        state = conversation_state(tx.conn, user_id)
    uow.flush()
    return {"user_id": user_id, "state": state, "changed": changed}


def send_message(tenant: Tenant, request_id: str | None, user_id: int, operator_id: str, text: str) -> int:
    """Send `text` as the operator; returns the outbox id. A refused send raises SendRefused AFTER its `not_sent`
    record (with the reason) committed, so the conversation shows what was refused and why."""
    uow = unit_of_work(request_id)
    refused = None
    with uow.transaction(tenant) as tx:
        if user_data.conversation(tx.conn, user_id) is None:
            raise NoSuchUser(user_id)
        try:
            outbound_id = send_as_operator(tx, user_id, operator_id, text, utcnow())
        except SendRefused as exc:  # caught inside the transaction: the not_sent record (with its reason) stays
            refused = exc
    uow.flush()
    if refused is not None:
        raise refused
    return outbound_id
