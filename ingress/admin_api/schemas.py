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
    cached_prompt_tokens = fields.Integer(metadata={"description": "prompt tokens served from the provider's cache"})
    billed_cost = fields.String(allow_none=True, metadata={
        "description": "per the tenants file's prices (decimal text); null: a model in unpriced_models has none"})
    unpriced_models = fields.List(fields.String())


class Usage(Schema):
    days = fields.List(fields.Nested(UsageDay))


class Error(Schema):
    error = fields.String()
    message = fields.String()
    request_id = fields.String(allow_none=True)
    details = fields.Raw()


# ---------------------------------------------------------------- knowledge (ingress/admin_api/knowledge_routes.py)

MAX_TAGS = 20
JOB_STATUSES = ("queued", "running", "done", "failed")
_TAG = fields.String(validate=validate.Length(min=1, max=50))


class KnowledgeUrlBody(Schema):
    url = fields.String(required=True, validate=validate.Length(min=8, max=2000),
                        metadata={"description": "http(s) URL the knowledge worker fetches (public addresses only)"})
    tags = fields.List(_TAG, validate=validate.Length(max=MAX_TAGS), load_default=None,
                       metadata={"description": "replace the document's tags (default: keep them)"})


class KnowledgeUploadForm(Schema):
    """The multipart form's text fields (the file itself is the part `file`)."""

    source = fields.String(validate=validate.Length(min=1, max=2000),
                           metadata={"description": "the document's name (default: the file name); "
                                                    "re-uploading under the same source replaces it"})
    tags = fields.List(_TAG, validate=validate.Length(max=MAX_TAGS), load_default=None)


class KnowledgeJobsQuery(_Query):
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PAGE))
    source = fields.String(validate=validate.Length(min=1, max=2000))


class KnowledgeDocumentQuery(_Query):
    chunks = fields.Boolean(load_default=False, metadata={"description": "include the chunks' text"})


class KnowledgeSearchQuery(_Query):
    q = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    limit = fields.Integer(load_default=5, validate=validate.Range(min=1, max=50))
    tags = fields.String(validate=validate.Length(min=1, max=500), metadata={"description": "comma-separated"})
    document = fields.String(validate=validate.Length(min=1, max=2000), metadata={"description": "one source"})


class KnowledgeJob(Schema):
    id = fields.Integer()
    kind = fields.String(metadata={"enum": ["ingest", "reindex"]})
    source = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": list(JOB_STATUSES)})
    result = fields.String(allow_none=True, metadata={"description": "added, updated, unchanged, retagged, "
                                                                     "failed, reindexed"})
    document_id = fields.Integer(allow_none=True)
    chunks_done = fields.Integer()
    chunks_total = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    attempts = fields.Integer()
    embedding_model = fields.String(allow_none=True)
    embedding_dim = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class KnowledgeJobList(Schema):
    jobs = fields.List(fields.Nested(KnowledgeJob))


class KnowledgeEmbedding(Schema):
    stored_model = fields.String(allow_none=True)
    stored_dim = fields.Integer(allow_none=True)
    configured_model = fields.String()
    configured_dim = fields.Integer()
    reindex_needed = fields.Boolean()


class KnowledgePassage(Schema):
    """What a stored chunk and a search hit both carry: the text and where it sits in its document."""
    heading_path = fields.List(fields.String())
    page_start = fields.Integer(allow_none=True)
    page_end = fields.Integer(allow_none=True)
    text = fields.String()


class KnowledgeChunk(KnowledgePassage):
    id = fields.Integer()
    ordinal = fields.Integer()


class KnowledgeDocument(Schema):
    id = fields.Integer()
    source = fields.String()
    title = fields.String()
    kind = fields.String()
    tags = fields.List(fields.String())
    status = fields.String(metadata={"enum": ["ready", "failed"]})
    error = fields.String(allow_none=True)
    chunk_count = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class KnowledgeDocumentDetail(KnowledgeDocument):
    chunks = fields.List(fields.Nested(KnowledgeChunk), metadata={"description": "with ?chunks=true"})
    latest_job = fields.Nested(KnowledgeJob, allow_none=True)


class KnowledgeDocumentList(Schema):
    documents = fields.List(fields.Nested(KnowledgeDocument))
    embedding = fields.Nested(KnowledgeEmbedding)


class KnowledgeRemoved(Schema):
    document_id = fields.Integer()
    source = fields.String()
    removed = fields.Boolean()


class KnowledgeHit(KnowledgePassage):
    chunk_id = fields.Integer()
    source = fields.String()
    title = fields.String()
    score = fields.Float()
    matched = fields.List(fields.String())
    similarity = fields.Float(allow_none=True)
    coverage = fields.Float()


class KnowledgeSearchResult(Schema):
    mode = fields.String(metadata={"enum": ["hybrid", "fulltext"]})
    note = fields.String(allow_none=True)
    hits = fields.List(fields.Nested(KnowledgeHit))
