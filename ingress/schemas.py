"""Marshmallow schemas of the webhooks Infobip sends (see ../shared/reference/infobip-whatsapp.md).

Lenient where Infobip evolves (unknown fields and unknown message types are accepted), strict where our
processing depends on a field: every field a worker reads (shared/conversation/turn.py store_inbound, shared/conversation/message_text.py,
shared/delivery/reports.py) is checked here for the type that code expects, numbers with shared.phone.normalize_number and
times with shared.delivery.infobip.times, the very functions the workers call. So what the webhook accepts, a worker can
store. (Characters and nesting are checked before, in ingress/payload.py.) We validate and then pass Infobip's own
payload on unchanged, so nothing it sent is lost.
"""
from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from shared.delivery.infobip.times import read_infobip_time
from shared.phone import normalize_number

# Infobip's documented maximum per POST is 2,000 results. Each result costs the ingress a Redis claim and a
# publish (about 1 ms each; a 2,000 batch takes ~2-3 s on 2 busy cores, far inside gunicorn's 30 s timeout,
# where 5,000 did not fit); refusing Infobip's own batch size would make it retry a valid batch forever.
MAX_RESULTS = 2000
PHONE_ERROR = "Not a phone number: 5 to 20 digits, optionally with '+' or '00', spaces, dashes, dots, brackets."


class _Lenient(Schema):
    error_messages = {"type": "Not an object."}  # marshmallow's default says "Invalid input type."

    class Meta:
        unknown = INCLUDE


def _text(**kwargs: Any) -> fields.String:
    """A string or null: what the workers read with `(value or "").strip()` or store in a text column."""
    return fields.String(allow_none=True, **kwargs)


def _infobip_time(value: str) -> None:
    try:
        read_infobip_time(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _time() -> fields.String:
    return fields.String(allow_none=True, validate=_infobip_time)


class _Code(fields.Field):
    """Infobip's numeric codes (`error.id`): an integer, or digits as a string (reports.py calls int() on it)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError("Not a code: expected an integer or a string.")
        return value


class ContactNameSchema(_Lenient):
    formattedName = _text()
    firstName = _text()


class ContactPhoneSchema(_Lenient):
    phone = _text()


class SharedContactSchema(_Lenient):
    """One card of a CONTACT message: message_text joins its names and phones as strings."""
    name = fields.Nested(ContactNameSchema, allow_none=True)
    phones = fields.List(fields.Nested(ContactPhoneSchema), allow_none=True)


class MessageSchema(_Lenient):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    text = _text()
    url = _text()
    caption = _text()
    latitude = fields.Float(allow_none=True)
    longitude = fields.Float(allow_none=True)
    name = _text()
    address = _text()
    id = _text()
    title = _text()
    payload = _text()
    emoji = _text()
    contacts = fields.List(fields.Nested(SharedContactSchema), allow_none=True)
    context = fields.Dict(allow_none=True)


class ContactSchema(_Lenient):
    name = _text()  # users.name (text)


class StatusSchema(_Lenient):
    groupName = _text()  # upper-cased by shared.delivery.reports.apply_delivery_report
    name = _text()       # outbound_messages.status_name (text)
    groupId = _Code(allow_none=True)
    id = _Code(allow_none=True)


class ErrorSchema(_Lenient):
    id = _Code(allow_none=True)
    name = _text()
    groupName = _text()
    description = _text()


class PriceSchema(_Lenient):
    pricePerMessage = fields.Float(allow_none=True)
    currency = _text()


class ResultSchema(_Lenient):
    """One item of `results`: an inbound message, a delivery report or a seen report."""

    from_ = fields.String(data_key="from", validate=validate.Length(min=1, max=150))
    to = fields.String(validate=validate.Length(min=1, max=150))
    messageId = fields.String(required=True, validate=validate.Length(min=1, max=200))
    integrationType = _text()
    receivedAt = _time()
    seenAt = _time()
    sentAt = _time()
    doneAt = _time()
    message = fields.Nested(MessageSchema)
    contact = fields.Nested(ContactSchema, allow_none=True)
    status = fields.Nested(StatusSchema, allow_none=True)
    error = fields.Nested(ErrorSchema, allow_none=True)
    price = fields.Nested(PriceSchema, allow_none=True)

    @validates_schema
    def _kind(self, data: dict, **_kwargs: Any) -> None:
        if "message" in data:
            errors = {}
            for key, name in (("from_", "from"), ("to", "to")):
                if not data.get(key):
                    errors[name] = ["Missing data for required field."]
                    continue
                try:
                    normalize_number(data[key])  # exactly what store_inbound and the tenant lookup call
                except ValueError:
                    errors[name] = [PHONE_ERROR]
            if errors:
                raise ValidationError(errors)
        elif "status" not in data and "seenAt" not in data:
            raise ValidationError("a result must carry 'message' (inbound), 'status' (delivery) or 'seenAt' (seen)")


class EnvelopeSchema(_Lenient):
    results = fields.List(fields.Nested(ResultSchema), required=True, validate=validate.Length(max=MAX_RESULTS))
    messageCount = fields.Integer()
    pendingMessageCount = fields.Integer()


def result_kind(result: dict) -> str:
    if "message" in result:
        return "inbound"
    return "delivery" if "status" in result else "seen"
