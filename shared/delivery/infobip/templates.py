"""A tenant's approved WhatsApp templates (tenants.yaml `templates:`), parsed once into `Tenant.templates`.

Outside the 24-hour window WhatsApp delivers only approved templates, so a reply or reminder due then is sent as
the tenant's `reengage` template, its placeholders filled from `{text}`, `{name}` and `{business_name}`:

    templates:
      reengage: {name: appointment_followup, language: en, placeholders: ["{name}", "{text}"]}
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from shared.errors import ConfigError, reject_unknown_keys

REENGAGE = "reengage"
PLACEHOLDER_FIELDS = ("text", "name", "business_name")
TEMPLATE_KEYS = {"name", "language", "placeholders"}
_NAME = re.compile(r"^[a-z0-9_]{1,512}$")       # Infobip: templateName ^[a-z0-9_]+$
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
# WhatsApp refuses long or empty template parameters: a longer text is cut at a word and marked with an ellipsis.
PLACEHOLDER_LIMIT = 1024
EMPTY_PLACEHOLDER = "-"


@dataclass(frozen=True)
class Template:
    key: str                    # e.g. "reengage"
    name: str                   # the approved template's name at Infobip
    language: str
    placeholders: tuple[str, ...]


def parse_templates(raw: Any, where: str) -> dict[str, Template]:
    """Validate a tenant's `templates:` mapping; errors name the tenant (`where`) and the field."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: templates must be a mapping of template keys to {{name, language, placeholders}}")
    return {str(key): _parse_one(str(key), doc, f"{where}: templates.{key}") for key, doc in raw.items()}


def _parse_one(key: str, doc: Any, where: str) -> Template:
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} must be a mapping with name, language and placeholders")
    reject_unknown_keys(doc, TEMPLATE_KEYS, where)
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name must be the template name: lower-case letters, digits and '_'")
    language = doc.get("language")
    if not isinstance(language, str) or not _LANGUAGE.match(language):
        raise ConfigError(f"{where}.language must be a language code such as en or en_GB")
    placeholders = doc.get("placeholders", [])
    if not isinstance(placeholders, list) or not all(isinstance(p, str) for p in placeholders):
        raise ConfigError(f"{where}.placeholders must be a list of strings")
    for i, text in enumerate(placeholders):
        _check_fields(text, f"{where}.placeholders[{i}]")
    return Template(key=key, name=name, language=language, placeholders=tuple(placeholders))


def _check_fields(text: str, where: str) -> None:
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError:
        raise ConfigError(f"{where} has unbalanced braces (write {{{{ or }}}} for a literal brace)") from None
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDER_FIELDS or spec or conversion:
            allowed = ", ".join("{" + f + "}" for f in PLACEHOLDER_FIELDS)
            raise ConfigError(f"{where} uses {{{field}}}; only {allowed} may be used")


def reengage_template(tenant: Any) -> Template | None:
    """The tenant's `reengage` template (parsed once, with the tenants file), or None."""
    return tenant.templates.get(REENGAGE)


def shorten(text: str, limit: int = PLACEHOLDER_LIMIT) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())  # template parameters may not contain newlines or runs of spaces
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def render_placeholders(template: Template, *, text: str, name: str | None, business_name: str) -> list[str]:
    """The template's placeholder values for one message; never empty (WhatsApp refuses empty parameters)."""
    values = {"text": shorten(text), "name": (name or "").strip(), "business_name": business_name}
    out = []
    for pattern in template.placeholders:
        rendered = shorten(pattern.format_map(values))
        out.append(rendered if rendered.strip() else EMPTY_PLACEHOLDER)
    return out
