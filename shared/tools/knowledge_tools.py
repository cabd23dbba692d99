"""search_knowledge: the agent looks in the business's documents again, with its own words.

The turn's prompt already carries the passages most relevant to the user's message (shared.conversation.engine);
this tool is for a second look (other words, one document, one tag). It returns only passages relevant enough to
ground an answer (the tenant's `knowledge_min_similarity` / `knowledge_min_coverage`), each with its source, and
says plainly when nothing is: the model is then to say it does not know. Read-only; the tenant is bound by the
server (ctx), so no argument can reach another tenant's documents.
"""
from __future__ import annotations

from typing import Any

from shared.tools.base import Tool, ToolAnnotations, ToolContext, ToolError

NOTHING_FOUND = ("Nothing in the business's documents answers this. Say that you don't know rather than guess, "
                 "and offer to ask a person.")


class SearchKnowledge(Tool):
    name = "search_knowledge"
    description = ("Search the business's documents (prices, hours, policies, products) for passages with their "
                   "sources, when the given passages do not answer.")
    input_schema = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 500},
            "tag": {"type": "string", "minLength": 1, "maxLength": 64,
                    "description": "only documents with this tag"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 8, "default": 4},
        },
        "required": ["query"],
        "additionalProperties": False,
    }
    annotations = ToolAnnotations(readOnlyHint=True)

    def invoke(self, ctx: ToolContext, args: dict[str, Any]) -> Any:
        if ctx.knowledge is None:
            raise ToolError("this business has no documents to search")
        cfg = ctx.tenant.config
        limit = args.get("limit", 4)
        try:
            found = ctx.knowledge.search(ctx.conn, args["query"], limit=min(2 * limit, 20),
                                         tags=[args["tag"]] if args.get("tag") else None)
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        hits = found.relevant(cfg.knowledge_min_similarity, cfg.knowledge_min_coverage)[:limit]
        result: dict[str, Any] = {"count": len(hits),
                                  "passages": [{"source": h.citation(), "text": h.text} for h in hits]}
        if not hits:
            result["note"] = NOTHING_FOUND
        elif found.note:
            result["note"] = found.note
        return result


KNOWLEDGE_TOOLS = (SearchKnowledge(),)
