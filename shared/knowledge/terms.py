"""What full-text search looks for in a question: its words, each with the forms it is likely written in.

The chunks' tsvectors use the 'simple' configuration (no stemming, no stop words: language-neutral, a tenant's
documents may be in any language), so the query does the matching's work: every word becomes a small group of
whole-word forms (English plural and verb endings added or trimmed: "massages" finds "massage", "open" finds
"opening"). Whole words, not prefixes: a prefix term ('car':*) makes the GIN index merge the posting lists of
every word starting with it, which at a million chunks costs more than the rest of a search together.
A question of stop words alone ("who are you?") has nothing to look for: no terms; nor has a lone letter ("I'm").
"""
from __future__ import annotations

from shared.memory.store import STOP_WORDS, query_terms

MAX_FORMS = 8        # forms of one word, the word itself first
MIN_INFLECTED = 3    # shorter words ("is", "go") are looked for as written
MAX_WORDS = 12       # a long question's first words; the vector ranking reads all of it
_TRIMMED = (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"))


def _stems(word: str) -> list[str]:
    """`word` and what it may be an inflection of (each at least MIN_INFLECTED letters)."""
    stems = [word]
    for suffix, replacement in _TRIMMED:
        if word.endswith(suffix) and not (suffix == "s" and word.endswith("ss")):
            stem = word[:-len(suffix)] + replacement
            if len(stem) >= MIN_INFLECTED:
                stems.append(stem)
    return stems


def _inflections(stem: str) -> list[str]:
    forms = [stem, stem + "s"]
    if stem.endswith(("s", "x", "z", "ch", "sh")):
        forms.append(stem + "es")
    if stem.endswith("y") and len(stem) > MIN_INFLECTED:
        forms.append(stem[:-1] + "ies")
    if stem.endswith("e"):
        forms += [stem[:-1] + "ing", stem + "d"]
    else:
        forms += [stem + "ing", stem + "ed"]
    return forms


def word_forms(word: str) -> tuple[str, ...]:
    """The whole-word forms one query word is looked for in (itself first, at most MAX_FORMS); digits and short
    words only as written."""
    if len(word) < MIN_INFLECTED or not word.isalpha():
        return (word,)
    stems = _stems(word)
    inflected = stems[1:] or stems  # "happens": forms of "happen", not "happensing"
    forms = [word] + stems[1:] + [f for s in inflected for f in _inflections(s)]
    return tuple(dict.fromkeys(forms))[:MAX_FORMS]


def fulltext_terms(query: str) -> list[tuple[str, ...]]:
    """One group of forms per word of the query (stop words dropped; a question of stop words alone gives none),
    in the question's order, at most MAX_WORDS."""
    words = [w for w in query_terms(query) if w not in STOP_WORDS and (len(w) > 1 or w.isdigit())]
    return [word_forms(w) for w in words[:MAX_WORDS]]
