"""Token estimates for budgeting prompts before they are sent.

An estimate is enough to keep prompts under a budget; what is billed is what the server reports in `usage`,
and that is what `llm_usage` records. (Exact tokenisers are model-specific and tiktoken downloads its tables at
run time, which an offline deployment cannot do.) Where a real tokeniser is available offline, any callable
that fits `TokenCounter` can be passed to `clip_text` and the `estimate_*` functions instead of `estimate_text`.

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

import json
import math
from typing import Any, Iterable, Protocol

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


def prompt_budget(max_context_tokens: int, tools: Iterable[dict[str, Any]] | None) -> int:
    """Tokens left for messages once the offered tool schemas are counted (they are sent on every call too).
    A quarter of the budget is always left, so a tenant with many tools still has room for the user's words."""
    return max(max_context_tokens - estimate_tools(tools), max_context_tokens // 4)
