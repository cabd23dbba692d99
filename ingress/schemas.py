"""Marshmallow schemas of the webhooks Infobip sends (see ../shared/reference/infobip-whatsapp.md).

Lenient where Infobip evolves (unknown fields and unknown message types are accepted), strict where our
processing depends on a field (ids, numbers, the message type). We validate and then pass Infobip's own
payload on unchanged, so nothing it sent is lost.
"""
from __future__ import annotations

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema


class _Lenient(Schema):
    class Meta:
        unknown = INCLUDE


class MessageSchema(_Lenient):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    text = fields.String()
    url = fields.String()
    caption = fields.String(allow_none=True)
    latitude = fields.Float()
    longitude = fields.Float()
    id = fields.String()
    title = fields.String()
    payload = fields.String(allow_none=True)
    emoji = fields.String(allow_none=True)
    contacts = fields.List(fields.Dict())
    context = fields.Dict(allow_none=True)


class ContactSchema(_Lenient):
    name = fields.String(allow_none=True)


class ResultSchema(_Lenient):
    """One item of `results`: an inbound message, a delivery report or a seen report."""

    from_ = fields.String(data_key="from", validate=validate.Length(min=1, max=150))
    to = fields.String(validate=validate.Length(min=1, max=150))
    messageId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    integrationType = fields.String()
    receivedAt = fields.String()
    message = fields.Nested(MessageSchema)
    contact = fields.Nested(ContactSchema, allow_none=True)
    status = fields.Dict()
    error = fields.Dict(allow_none=True)
    seenAt = fields.String()

    @validates_schema
    def _kind(self, data, **_kwargs):
        if "message" in data:
            missing = [k for k in ("from_", "to") if not data.get(k)]
            if missing:
                raise ValidationError({("from" if k == "from_" else k): ["Missing data for required field."]
                                       for k in missing})
        elif "status" not in data and "seenAt" not in data:
            raise ValidationError("a result must carry 'message' (inbound), 'status' (delivery) or 'seenAt' (seen)")


class EnvelopeSchema(_Lenient):
    results = fields.List(fields.Nested(ResultSchema), required=True, validate=validate.Length(max=5000))
    messageCount = fields.Integer()
    pendingMessageCount = fields.Integer()


def result_kind(result: dict) -> str:
    if "message" in result:
        return "inbound"
    return "delivery" if "status" in result else "seen"
