"""What a user's message asks for, without a model: a person (handoff intent, per language) or a stop / start
keyword (whole message, any case). Checked before any LLM call.

The handoff rules are deliberately simple: a short message (at most MAX_INTENT_CHARS) naming a way of talking
("talk", "hablar", "falar", "sprechen", ...) and a person ("person", "persona", "atendente", "Menschen", ...) in
one of the tenant's languages. Accents and case are ignored. A false positive costs a notice and a person's look;
a missed request is caught by the two-failures rule or an operator.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Iterable

MAX_INTENT_CHARS = 160

# language -> (ways of talking, persons): word starts, matched on the message without accents, lower case
_RULES: dict[str, tuple[str, str]] = {
    "en": (r"talk|speak|chat|connect|transfer", r"person|human|agent|operator|representative|somebody|staff"),
    "es": (r"habl|comunic|convers|chate|pasa", r"persona|humano|agente|operador|asesor|ejecutivo"),
    "pt": (r"fala|falo|convers|comunic|passa|chamar", r"pessoa|humano|atendente|agente|operador|alguem real"),
    "de": (r"sprech|rede|verbind|chatt|weiterleit", r"mensch|person|mitarbeiter|berater|agent|jemand"),
    "fr": (r"parl|discut|convers|passe|mettre en relation", r"personne|humain|agent|conseill|operat"),
    "it": (r"parla|chiacchier|passa|mett", r"persona|umano|operator|agente|consulente"),
    "hr": (r"razgovar|prica|govor|spoj|preusmjer", r"osob|covjek|operater|agent|zaposlen|djelatnik"),
}
_COMPILED = {lang: (re.compile(rf"\b(?:{talk})"), re.compile(rf"\b(?:{person})")) for lang, (talk, person)
             in _RULES.items()}
KNOWN_LANGUAGES = tuple(_RULES)


def plain(text: str) -> str:
    """Lower case, accents removed, spaces collapsed: "Ich möchte …" -> "ich mochte …"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def asks_for_person(text: str | None, languages: Iterable[str]) -> bool:
    """Whether `text` asks to talk to a person, by the rules of `languages`."""
    if not text or len(text) > MAX_INTENT_CHARS:
        return False
    words = plain(text)
    return any(talk.search(words) and person.search(words)
               for talk, person in (_COMPILED[lang] for lang in languages if lang in _COMPILED))


def _keyword(text: str) -> str:
    return plain(text).strip(" .!?¡¿\"'")


def matched_keyword(text: str | None, keywords: Iterable[str]) -> str | None:
    """The keyword `text` is (the whole message, any case, accents and end punctuation ignored), or None."""
    if not text or len(text) > 40:
        return None
    said = _keyword(text)
    return next((k for k in keywords if _keyword(k) == said), None)
