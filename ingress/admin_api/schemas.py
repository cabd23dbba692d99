"""Marshmallow schemas of the admin API: what each endpoint accepts (validated with them) and answers (dumped
with them). /api/v1/openapi.json is generated from these very classes (ingress/admin_api/openapi.py)."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

STATES = ("bot", "human", "opted_out")
MAX_TEXT = 4096          # WhatsApp's limit for one text message
MAX_REASON = 500
MAX_PAGE = 100
MAX_USAGE_DAYS = 366


class _Query(Schema):
    error_messages = {"unknown": "Unknown parameter."}


class ConversationListQuery(_Query):
    state = fields.String(validate=validate.OneOf(STATES), metadata={"description": "bot, human or opted_out"})
    q = fields.String(validate=validate.Length(min=1, max=100),
                      metadata={"description": "part of the phone, the name, or any message text"})
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE))


class MessagesQuery(_Query):
    before = fields.Integer(validate=validate.Range(min=1), metadata={"description": "messages older than this id"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))


class PhoneQuery(_Query):
    phone = fields.String(required=True, validate=validate.Length(min=5, max=32))


class UsageQuery(_Query):
    since = fields.Date(data_key="from", metadata={"description": "first day (tenant-local), default 30 days ago"})
    until = fields.Date(data_key="to", metadata={"description": "last day (tenant-local), default today"})

    @validates_schema
    def _range(self, data, **kwargs):
        since, until = data.get("since"), data.get("until")
        if since and until and (until < since or (until - since).days >= MAX_USAGE_DAYS):
            raise ValidationError(f"'to' must be on or after 'from', at most {MAX_USAGE_DAYS} days later.")


class ReasonBody(Schema):
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON))


class SendBody(Schema):
    text = fields.String(required=True, validate=validate.Length(min=1, max=MAX_TEXT))

    @validates_schema
    def _not_blank(self, data, **kwargs):
        if not data["text"].strip():
            raise ValidationError("Must not be blank.", "text")


class Conversation(Schema):
    user_id = fields.Integer()
    phone = fields.String()
    name = fields.String(allow_none=True)
    state = fields.String(metadata={"enum": list(STATES)})
    state_changed_at = fields.DateTime(allow_none=True)
    last_inbound_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class ConversationItem(Conversation):
    last_message_id = fields.Integer(allow_none=True)
    last_message_role = fields.String(allow_none=True)
    last_message_body = fields.String(allow_none=True)
    last_message_at = fields.DateTime(allow_none=True)


class ConversationPage(Schema):
    conversations = fields.List(fields.Nested(ConversationItem))
    page = fields.Integer()
    per_page = fields.Integer()
    next_page = fields.Integer(allow_none=True)


class Delivery(Schema):
    part = fields.Integer()
    kind = fields.String()
    status = fields.String(metadata={"description": "queued, sent, delivered, seen, failed, not_sent, ..."})
    reason = fields.String(allow_none=True)
    sent_at = fields.String(allow_none=True)
    delivered_at = fields.String(allow_none=True)
    seen_at = fields.String(allow_none=True)


class Message(Schema):
    id = fields.Integer()
    role = fields.String(metadata={"enum": ["user", "assistant", "system", "operator"]})
    message_type = fields.String()
    body = fields.String(allow_none=True)
    status = fields.String()
    operator_id = fields.String(allow_none=True)
    received_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    delivery = fields.List(fields.Nested(Delivery))


class MessagePage(Schema):
    messages = fields.List(fields.Nested(Message))
    next_before = fields.Integer(allow_none=True)


class StateChange(Schema):
    user_id = fields.Integer()
    state = fields.String()
    changed = fields.Boolean(metadata={"description": "false when the conversation already was in that state"})


class Sent(Schema):
    user_id = fields.Integer()
    message_id = fields.Integer()


class OptOut(Schema):
    user_id = fields.Integer()
    state = fields.String()
    opted_out = fields.Boolean()
    since = fields.DateTime(allow_none=True)


class UserRef(Schema):
    user_id = fields.Integer()


class Export(Schema):
    user = fields.Dict()
    messages = fields.List(fields.Dict())
    memory_chunks = fields.List(fields.Dict())
    reminders = fields.List(fields.Dict())
    outbound_messages = fields.List(fields.Dict())
    llm_usage = fields.List(fields.Dict())
    conversation_events = fields.List(fields.Dict())
    privacy_requests = fields.List(fields.Dict())


class Forgotten(Schema):
    user_id = fields.Integer()
    deleted = fields.Dict(keys=fields.String(), values=fields.Integer())


class UsageDay(Schema):
    day = fields.Date()
    calls = fields.Integer()
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    users = fields.Integer(metadata={"description": "distinct users (erased users' calls count as none)"})


class Usage(Schema):
    days = fields.List(fields.Nested(UsageDay))


class Error(Schema):
    error = fields.String()
    message = fields.String()
    request_id = fields.String(allow_none=True)
    details = fields.Raw()
