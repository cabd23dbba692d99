"""Cheap intent classification for tool gating: rules first, then similarity to example phrases, the LLM only
when both are unsure. Misclassifying costs tokens, not correctness: when unsure the orchestrator exposes every
enabled tool.
"""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from functools import lru_cache
from typing import Iterable

from shared.agents.base import Intent, LLMCall
from shared.llm.base import LLMProvider, answered_by, answered_entry
from shared.conversation.tokens import clip_text, estimate_messages

log = logging.getLogger(__name__)

_DB = re.compile(
    r"\b(remind|reminders?|remember|save|note|notes|schedul\w*|agenda|calendar|appointments?|events?|meetings?|"
    r"what do i have|am i (doing|busy)|forget|delete|remove|cancel|birthday|to-?do|tasks?|plans?|"
    r"tomorrow|tonight|next week|this week|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"what did i (tell|say)|do you remember|what do you (know|remember) about)\b", re.I)
_SMALLTALK = re.compile(
    r"^\s*(hi|hello|hey|hola|yo|good (morning|afternoon|evening|night)|thanks?( you)?|thank you|ok(ay)?|cool|"
    r"great|bye|see you|how are you|who are you|what('s| is) your name|nice|lol|cheers|tell me a joke|👍|🙏)\b[\s!.?]*",
    re.I)
_STOP = {"get", "the", "for", "and", "with", "from", "this", "that", "current", "api", "list", "your", "about",
         "tool", "returns", "return", "data", "info", "information", "city", "given", "user"}

EXAMPLES = {
    "db": ["what's on my calendar", "add an appointment", "do I have anything on monday", "put it in my diary",
           "what did I tell you about my car", "i need to pick up the kids at 5", "my dentist is next week"],
    "smalltalk": ["how are you doing", "good night", "ok cool", "who made you", "you are funny", "nice one",
                  "have a great day", "tell me a joke", "I had a long day at work", "can you recommend a good book",
                  "my favourite food is pizza by the way", "I think I'll take the bus instead",
                  "that's a lot, I'm tired"],
}
SIMILARITY_THRESHOLD = 0.45


# Reads the rules are sure of (shared.conversation.prefetch runs them before the first model call): a question
# about the user's schedule, reminders or earlier notes that asks for nothing to change. The message, minus its
# read phrase, must name no write ("remind me", "save", "cancel", ...): "remember my dentist tomorrow" is a save.
_READS = (
    ("memory", re.compile(r"\b(what did i (tell|say|mention)( to)?( you)?|do you remember|"
                          r"what do you (know|remember)( about)?)\b", re.I)),
    ("reminders", re.compile(r"\b(my|any|pending|which|what|list|show)( pending)? reminders\b|"
                             r"\breminders do i have\b", re.I)),
    ("events", re.compile(r"\b(what do i have|what have i got|what am i doing|am i (busy|free)|"
                          r"what'?s on|what is on|do i have anything|anything (on|scheduled|planned)|"
                          r"my (schedule|agenda|calendar|events|appointments|plans))\b", re.I)),
)
_WRITE = re.compile(r"\b(remind me|remember|save|note|add|put|book|set|cancel|delete|remove|forget|change|move|"
                    r"reschedule|update|don'?t)\b", re.I)
_TOPIC_LEAD = re.compile(r"^\s*(about|regarding)\s+", re.I)


def read_kinds(text: str) -> tuple[str, ...]:
    """What the message surely asks to read ("events", "reminders", "memory"), by rules; () when it is not
    clearly a read (a write, or a read phrase inside something else). Long messages are never sure."""
    if len(text) > 300:
        return ()
    found = [(kind, m) for kind, pattern in _READS for m in [pattern.search(text)] if m]
    if not found:
        return ()
    rest = text
    for _, m in found:
        rest = rest.replace(m.group(0), " ")
    return () if _WRITE.search(rest) else tuple(kind for kind, _ in found)


def memory_topic(text: str) -> str:
    """What a question about earlier notes is about: "What did I tell you about my car?" -> "my car"; the whole
    message when it names nothing after its read phrase."""
    m = _READS[0][1].search(text)
    rest = text[m.end():] if m else text
    rest = _TOPIC_LEAD.sub("", rest, count=1).strip(" ?.!,")
    return rest if re.search(r"\w", rest) else text.strip()


def http_keywords(descriptions: Iterable[tuple[str, str]]) -> set[str]:
    """Words that point at a tenant's HTTP tools (from their names and descriptions)."""
    words: set[str] = set()
    for name, description in descriptions:
        for w in re.findall(r"[a-z]+", f"{name.replace('_', ' ')} {description}".lower()):
            if len(w) > 3 and w not in _STOP:
                words.add(w)
    return words


def _vector(text: str, dim: int = 256) -> list[float]:
    vec = [0.0] * dim
    tokens = re.findall(r"\w+", text.lower())
    grams = tokens + [t[i:i + 3] for t in tokens for i in range(max(1, len(t) - 2))]
    for g in grams:
        h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big")
        vec[h % dim] += 1.0 if (h >> 40) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


@lru_cache(maxsize=1)
def _example_vectors() -> dict[str, list[list[float]]]:
    return {k: [_vector(e) for e in v] for k, v in EXAMPLES.items()}


def _similar(text: str) -> tuple[str, float]:
    v = _vector(text)
    best, score = "unknown", 0.0
    for intent, vectors in _example_vectors().items():
        for e in vectors:
            s = sum(a * b for a, b in zip(v, e))
            if s > score:
                best, score = intent, s
    return best, score


def _mentions(low: str, words: Iterable[str]) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\w*\b", low) for w in words)


def classify(text: str, http_words: set[str], llm: LLMProvider | None = None,
             calls: list[LLMCall] | None = None, max_tokens: int | None = None,
             mcp_words: set[str] = frozenset()) -> Intent:
    """Classify one user message. LLM calls made here are appended to `calls` for usage accounting; what they
    send fits `max_tokens` (the tenant's `max_context_tokens`) and never more than `INTENT_MAX_TOKENS` of text.
    `http_words` / `mcp_words` point at the tenant's HTTP and MCP tools (`http_keywords` of their descriptions)."""
    low = text.lower()
    hits = [name for name, hit in (("db", bool(_DB.search(low))), ("http", _mentions(low, http_words)),
                                   ("mcp", _mentions(low, mcp_words))) if hit]
    if len(hits) > 1:
        return Intent("mixed", "rules")
    if hits:
        return Intent(hits[0], "rules")
    if _SMALLTALK.fullmatch(text.strip()) or (_SMALLTALK.match(text) and len(low.split()) <= 4):
        return Intent("smalltalk", "rules")
    best, score = _similar(text)
    if score >= SIMILARITY_THRESHOLD:
        return Intent(best, "embedding", round(score, 3))
    if llm is not None:
        return _ask_llm(text, llm, calls, max_tokens)
    return Intent("unknown", "default", 0.0)


_PROMPT = ("Classify the user's message for a WhatsApp business assistant. Answer with exactly one word: "
           "smalltalk (greetings, chit-chat), db (the user's own notes, events, schedule, reminders, memories), "
           "http (a question answered by an external service of the business), unknown.")


INTENT_MAX_TOKENS = 300  # the gist of a message is enough to classify it; a 60,000-character text costs no more


def intent_messages(text: str, max_tokens: int | None = None) -> list[dict[str, str]]:
    """The classifier's prompt, the user's text clipped (with a visible marker) so the whole fits the budget."""
    system = {"role": "system", "content": _PROMPT}
    room = INTENT_MAX_TOKENS if max_tokens is None else min(INTENT_MAX_TOKENS, max_tokens)
    room -= estimate_messages([system, {"role": "user", "content": ""}])
    return [system, {"role": "user", "content": clip_text(text, room)}]


def _ask_llm(text: str, llm: LLMProvider, calls: list[LLMCall] | None, max_tokens: int | None = None) -> Intent:
    started = time.monotonic()
    try:
        result = llm.chat(intent_messages(text, max_tokens))
    except Exception as exc:  # costs tokens, not the answer: every enabled tool is offered instead
        log.warning("intent call failed; offering every tool", extra={"error_type": exc.__class__.__name__,
                                                                      "error": str(exc)[:300]})
        return Intent("unknown", "default", 0.0)
    if calls is not None:
        provider, model = answered_by(result, llm)
        calls.append(LLMCall(provider, model, result.usage.prompt_tokens, result.usage.completion_tokens,
                             int((time.monotonic() - started) * 1000), (), "intent",
                             answered_entry(result, llm), cached_prompt_tokens=result.usage.cached_prompt_tokens))
    word = re.findall(r"[a-z]+", (result.content or "").lower())
    name = word[0] if word and word[0] in ("smalltalk", "db", "http") else "unknown"
    return Intent(name, "llm", 0.5)

