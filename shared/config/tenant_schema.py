"""The `config:` and `embedding:` blocks of a tenant as declarative marshmallow schemas.

Each setting is declared once, with its type, range and default; every wrong key of a block is reported in one
pass (marshmallow collects them), each as an `Issue` with the field path, so `wabot check` can show them all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse as parse_rate_limit
from marshmallow import EXCLUDE, Schema, ValidationError, fields

from shared.errors import ConfigError

Path = tuple[str | int, ...]


class FieldError(ConfigError):
    """A ConfigError at a known place of a tenant's document (`path` from the tenant entry), for the YAML line."""

    def __init__(self, message: str, path: Path = ()):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Issue:
    path: Path               # from the document root, e.g. ("tenants", 0, "config", "timezone")
    message: str             # names the tenant and the field, never a secret value
    line: int | None = None  # 1-based line in the tenants file, when read from one

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


_KIND_ERRORS = {"bool": "must be true or false (unquoted)", "name": "must be a string",
                "text": "must be a non-empty string", "str": "must be a string",
                "fraction": "must be a number between 0 and 1"}


class TenantFileError(ConfigError):
    """Every mistake of a tenants file, one per line of the message, so one run shows them all."""

    def __init__(self, issues: list[Issue]):
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


class Strict(fields.Field):
    """A YAML scalar of one exact type (no "true" for true, no "1500" for 1500), optionally in a range.

    A key with no value (`key:`) means the default, except for true/false settings, where it is a mistake."""

    def __init__(self, kind: str, lo: int | None = None, hi: int | None = None, **kwargs: Any):
        message = _KIND_ERRORS.get(kind, f"must be a whole number between {lo} and {hi}")
        super().__init__(error_messages={"null": message}, **kwargs)
        self.kind, self.lo, self.hi, self.message = kind, lo, hi, message
        self.none_means_default = kind != "bool"

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        kind = self.kind
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and self.lo <= value <= self.hi
        elif kind == "fraction":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1
            value = float(value) if ok else value
        elif kind == "name":  # a display name or zone: numbers read as text
            ok = isinstance(value, (str, int)) and not isinstance(value, bool)
            value = str(value).strip() or None if ok else value
        else:
            ok = isinstance(value, str) and (kind == "str" or bool(value.strip()))
            value = value.strip() if ok else value
        if not ok:
            raise ValidationError(self.message)
        return value


def _zone(value: str | None) -> None:
    try:
        ZoneInfo(value or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a known IANA time zone") from None


def _rate(value: str) -> None:
    try:
        parse_rate_limit(value)
    except ValueError:
        raise ValidationError("must look like '20/minute'") from None


def _reply() -> Strict:
    """An optional reply text (None: the built-in one)."""
    return Strict("text", load_default=None)


class ConfigSchema(Schema):
    """`config:`. Defaults here are the only ones; readers use the typed `TenantConfig` fields."""

    class Meta:
        unknown = EXCLUDE  # unknown keys are reported by `config_issues`, with the list of known ones

    business_name = Strict("name", load_default=None)      # None: the tenant id
    timezone = Strict("name", load_default="UTC", validate=_zone)
    rag_enabled = Strict("bool", load_default=True)
    # Business knowledge (shared/knowledge): passages per prompt (0: none), and what makes a passage relevant
    # enough to ground an answer: cosine similarity to the question, or the share of its words it contains.
    knowledge_passages = Strict("int", 0, 20, load_default=4)
    knowledge_min_similarity = Strict("fraction", load_default=0.35)
    knowledge_min_coverage = Strict("fraction", load_default=0.5)
    max_context_tokens = Strict("int", 200, 1_000_000, load_default=3000)  # prompt budget per LLM call
    # Recent history per prompt, sized apart from the tool schemas (gating saves what it removes); older messages
    # are folded into a rolling summary of at most summary_max_tokens (0: no summaries, older history is dropped).
    history_budget_tokens = Strict("int", 100, 1_000_000, load_default=1500)
    summary_max_tokens = Strict("int", 0, 4000, load_default=300)
    smalltalk_history_tokens = Strict("int", 0, 1_000_000, load_default=250)  # small talk: a short window
    smalltalk_memory_min_score = Strict("fraction", load_default=0.5)  # small talk carries memories this relevant
    daily_token_budget = Strict("int", 1, 10**12, load_default=None)  # None: unlimited
    max_tool_steps = Strict("int", 1, 20, load_default=6)                  # LLM calls per turn
    debounce_ms = Strict("int", 0, 60_000, load_default=1500)              # burst window answered as one turn
    embedding_dim = Strict("int", 1, 16000, load_default=None)  # None: known from the model
    rate_limit_user = Strict("text", load_default="30/minute", validate=_rate)
    rate_limit_tenant = Strict("text", load_default="1200/minute", validate=_rate)
    mark_read = Strict("bool", load_default=True)
    typing_indicator = Strict("bool", load_default=True)
    tool_gating = Strict("bool", load_default=True)
    # A read the intent rules are sure of (the schedule, reminders, earlier notes) runs before the first model
    # call and its result goes into the turn's context: one model call instead of two (shared.conversation.prefetch).
    prefetch_reads = Strict("bool", load_default=True)
    unreadable_message_reply = _reply()
    budget_exhausted_reply = _reply()
    rate_limit_notice = _reply()
    failure_reply = _reply()


CONFIG_KEYS = frozenset(ConfigSchema().fields)
EMBEDDING_PROVIDERS = ("openai", "ollama", "local")


def _http_url(value: str) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValidationError("must start with http:// or https://")


def _provider(value: str) -> None:
    if value.lower() not in ("",) + EMBEDDING_PROVIDERS:
        raise ValidationError(f"must be one of {', '.join(EMBEDDING_PROVIDERS)}")


class EmbeddingSchema(Schema):
    """`embedding:` (optional): where the tenant's embedding model is served, read by shared.memory.embedders."""

    class Meta:
        unknown = EXCLUDE

    provider = Strict("str", load_default="", validate=_provider)  # "": from the model and the LLM provider
    base_url = Strict("str", load_default="", validate=_http_url)
    api_key = Strict("str", load_default="")


@dataclass(frozen=True)
class EmbeddingEndpoint:
    provider: str = ""             # "": chosen from the model name and the tenant's LLM provider
    base_url: str | None = None
    api_key: str = ""

    def __repr__(self) -> str:  # the key is a secret: never print it
        return f"EmbeddingEndpoint(provider={self.provider!r}, base_url={self.base_url!r})"


def load_block(schema: Schema, block: Any, name: str, where: str) -> tuple[dict[str, Any], list[FieldError]]:
    """`block` (None: all defaults) loaded by `schema`: its values and one FieldError per wrong or unknown key."""
    block = {} if block is None else block
    if not isinstance(block, Mapping):
        return {}, [FieldError(f"{where}: {name} must be a mapping", (name,))]
    known = schema.fields
    errors = [FieldError(f"{where}: unknown {name} key(s) {key}: {name}.{key} is not one of "
                         f"{', '.join(sorted(known))}", (name, key))
              for key in sorted(str(k) for k in set(block) - set(known))]
    data = {k: v for k, v in block.items()
            if k in known and not (v is None and getattr(known[k], "none_means_default", False))}
    try:
        return schema.load(data), errors
    except ValidationError as exc:
        for key, messages in sorted(exc.normalized_messages().items()):
            text = "; ".join(messages) if isinstance(messages, list) else str(messages)
            errors.append(FieldError(f"{where}: {name}.{key} {text}", (name, key)))
        return {}, errors


def embedding_endpoint(values: Mapping[str, Any]) -> EmbeddingEndpoint:
    return EmbeddingEndpoint(provider=values["provider"].lower(), base_url=values["base_url"] or None,
                             api_key=values["api_key"])


# ---------------------------------------------------------------- handoff: and opt_out: (issue 12)

HANDOFF_LANGUAGES = ("en", "es", "pt", "de", "fr", "it", "hr")  # the languages shared.handoff.intent knows
DEFAULT_NOTICE_TO_HUMAN = "I'm handing you over to a person from our team. They'll answer you here shortly."
DEFAULT_NOTICE_TO_BOT = "You're talking to the assistant again. How can I help?"
DEFAULT_STOP_KEYWORDS = ("STOP", "UNSUBSCRIBE", "STOPP", "ABMELDEN", "PARAR", "BAJA", "ARRÊT", "ARRET", "BASTA",
                         "ODJAVA")
DEFAULT_START_KEYWORDS = ("START", "UNSTOP", "RESUME", "ANMELDEN", "ALTA", "INICIAR", "REPRENDRE", "RIPRENDI",
                          "PRIJAVA")
DEFAULT_STOP_CONFIRMATION = ("You won't get any more messages from us. Send START to receive messages again.")
DEFAULT_START_CONFIRMATION = "Welcome back! You'll get our messages again. Send STOP to stop them."


def _languages(value: list[str]) -> None:
    unknown = sorted(set(value) - set(HANDOFF_LANGUAGES))
    if unknown:
        raise ValidationError(f"has unknown language(s) {', '.join(unknown)}; known: {', '.join(HANDOFF_LANGUAGES)}")


def _keywords(value: list[str]) -> None:
    if not value:
        raise ValidationError("must list at least one keyword")


def _words(default: tuple[str, ...], validate=_keywords) -> fields.List:
    return fields.List(Strict("text"), load_default=list(default), validate=validate,
                       error_messages={"invalid": "must be a list of strings"})


class HandoffSchema(Schema):
    """`handoff:` (optional): when a person takes the conversation over, what the user is told, and the business's
    webhook (shared.handoff)."""

    class Meta:
        unknown = EXCLUDE

    languages = _words(HANDOFF_LANGUAGES, _languages)     # "can I talk to a person?" is recognised in these
    notice_to_human = Strict("text", load_default=DEFAULT_NOTICE_TO_HUMAN)
    notice_to_bot = Strict("text", load_default=DEFAULT_NOTICE_TO_BOT)
    idle_minutes = Strict("int", 1, 100_000, load_default=120)  # no operator activity this long: back to the bot
    webhook_url = Strict("str", load_default="", validate=_http_url)  # "": no webhook
    webhook_secret = Strict("str", load_default="")       # HMAC-SHA256 key; ${ENV} in the file
    allow_private_network = Strict("bool", load_default=False)  # tests: a webhook on 127.0.0.1


class OptOutSchema(Schema):
    """`opt_out:` (optional): whole-message keywords (any case) that stop and resume every message to a user."""

    class Meta:
        unknown = EXCLUDE

    stop_keywords = _words(DEFAULT_STOP_KEYWORDS)
    start_keywords = _words(DEFAULT_START_KEYWORDS)
    stop_confirmation = Strict("text", load_default=DEFAULT_STOP_CONFIRMATION)
    start_confirmation = Strict("text", load_default=DEFAULT_START_CONFIRMATION)


@dataclass(frozen=True)
class HandoffSettings:
    languages: tuple[str, ...] = HANDOFF_LANGUAGES
    notice_to_human: str = DEFAULT_NOTICE_TO_HUMAN
    notice_to_bot: str = DEFAULT_NOTICE_TO_BOT
    idle_minutes: int = 120
    webhook_url: str = ""
    webhook_secret: str = ""
    allow_private_network: bool = False

    def __repr__(self) -> str:  # the URL may carry a token and the secret is one: never print them
        return f"HandoffSettings(languages={self.languages!r}, idle_minutes={self.idle_minutes})"


@dataclass(frozen=True)
class OptOutSettings:
    stop_keywords: tuple[str, ...] = DEFAULT_STOP_KEYWORDS
    start_keywords: tuple[str, ...] = DEFAULT_START_KEYWORDS
    stop_confirmation: str = DEFAULT_STOP_CONFIRMATION
    start_confirmation: str = DEFAULT_START_CONFIRMATION


def handoff_settings(values: Mapping[str, Any], where: str) -> HandoffSettings:
    """The loaded `handoff:` block; a webhook needs its secret (FieldError otherwise)."""
    if values["webhook_url"] and not values["webhook_secret"]:
        raise FieldError(f"{where}: handoff.webhook_secret must be set when handoff.webhook_url is",
                         ("handoff", "webhook_secret"))
    return HandoffSettings(**{**values, "languages": tuple(values["languages"])})


def opt_out_settings(values: Mapping[str, Any]) -> OptOutSettings:
    return OptOutSettings(**{**values, "stop_keywords": tuple(values["stop_keywords"]),
                             "start_keywords": tuple(values["start_keywords"])})


# ---------------------------------------------------------------- confirm: (issue 15)

TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"


def _tool_names(value: list[str]) -> None:
    bad = [v for v in value if not re.match(TOOL_NAME, v)]
    if bad:
        raise ValidationError("must list tool names (1-64 letters, digits, '_' or '-'; an MCP tool is "
                              "<server>__<tool>)")


class ConfirmSchema(Schema):
    """`confirm:` (optional): tools the bot runs only after the user's explicit yes in the next message
    (shared.tools.confirmation). MCP tools annotated `destructiveHint: true` need it without being listed."""

    class Meta:
        unknown = EXCLUDE

    tools = fields.List(Strict("text"), load_default=list, validate=_tool_names,
                        error_messages={"invalid": "must be a list of strings"})
    expiry_minutes = Strict("int", 1, 1440, load_default=10)   # an unanswered request is cancelled after this


@dataclass(frozen=True)
class ConfirmSettings:
    tools: frozenset[str] = frozenset()
    expiry_minutes: int = 10


def confirm_settings(values: Mapping[str, Any]) -> ConfirmSettings:
    return ConfirmSettings(tools=frozenset(values["tools"]), expiry_minutes=values["expiry_minutes"])

