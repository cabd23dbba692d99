"""The check every tool input schema passes: tool registration and the tenants' `http_tools` at start-up."""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


def object_schema_problem(schema: Any) -> str | None:
    """Why `schema` cannot be a tool's input schema (MCP: a JSON Schema with "type": "object" at the root), or None."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "must be a JSON schema with type: object"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"is not a valid JSON schema ({exc.message})"
    return None


# Limits a grammar-constrained server turns into grammar rules (llama.cpp's converter makes one rule per allowed
# length: maxLength 2000 overflows it). The model gets the shape; our validation still enforces the limits.
GRAMMAR_HEAVY_KEYWORDS = frozenset({
    "maxLength", "minLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "maxItems", "minItems", "uniqueItems", "maxProperties", "minProperties", "$schema", "examples",
})


def simplified_schema(schema: Any) -> Any:
    """`schema` without GRAMMAR_HEAVY_KEYWORDS, at every depth (a property named like a keyword is kept)."""
    if isinstance(schema, list):
        return [simplified_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in GRAMMAR_HEAVY_KEYWORDS:
            continue
        if key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
            out[key] = {name: simplified_schema(sub) for name, sub in value.items()}
        else:
            out[key] = simplified_schema(value)
    return out


def simplified_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI `tools` entries with simplified parameter schemas."""
    return [{**t, "function": {**t["function"], "parameters": simplified_schema(t["function"].get("parameters")
                                                                                  or {"type": "object"})}}
            if isinstance(t.get("function"), dict) else t for t in tools]
