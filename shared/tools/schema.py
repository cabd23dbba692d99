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
