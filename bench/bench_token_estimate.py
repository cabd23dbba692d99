"""How long the token estimate and `clip_text` take on a 60,000-character message (issue 10).

Prints microseconds per call (best of 5 repeats) for English, Chinese and mixed text, next to the old estimate
(chars/4) and the old clip (4 characters per token), and what each estimate says. No thresholds: numbers only.

    .venv/bin/python bench/bench_token_estimate.py
"""
from __future__ import annotations

import math
import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.conversation.tokens import MIN_CLIP_TOKENS, clip_text, estimate_text  # noqa: E402

CHARS = 60_000


def old_estimate(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def old_clip(text: str, max_tokens: int) -> str:
    limit = max(MIN_CLIP_TOKENS, max_tokens) * 4
    if len(text) <= limit:
        return text
    marker = f" […shortened from {len(text)} characters…] "
    keep = max(0, limit - len(marker))
    return text[:keep // 2] + marker + text[len(text) - (keep - keep // 2):]


def samples() -> dict[str, str]:
    rnd = random.Random(10)
    english = ("Remember I have a dentist appointment tomorrow at 2 PM, and remind me to call the office. " * 700)
    chinese = "".join(chr(rnd.randint(0x4E00, 0x9FFF)) for _ in range(CHARS))
    mixed = ("Напомни мне завтра 明天下午两点 dentist at 2 PM 😀 ✅ café. " * 1500)
    return {"english": english[:CHARS], "chinese": chinese, "mixed": mixed[:CHARS]}


def micros(call, repeat: int = 5, number: int = 20) -> float:
    return min(timeit.repeat(call, repeat=repeat, number=number)) / number * 1e6


def main() -> None:
    print(f"{'text':8} {'chars':>6}  {'old est':>8} {'us':>7}  {'new est':>8} {'us':>7}  "
          f"{'old clip 1500':>13} {'us':>7}  {'new clip 1500':>13} {'us':>7}")
    for name, text in samples().items():
        old_c, new_c = old_clip(text, 1500), clip_text(text, 1500)
        print(f"{name:8} {len(text):>6}  {old_estimate(text):>8} {micros(lambda: old_estimate(text)):>7.1f}  "
              f"{estimate_text(text):>8} {micros(lambda: estimate_text(text)):>7.1f}  "
              f"{estimate_text(old_c):>6} tokens {micros(lambda: old_clip(text, 1500)):>7.1f}  "
              f"{estimate_text(new_c):>6} tokens {micros(lambda: clip_text(text, 1500)):>7.1f}")
    print("(clip columns: the new estimate of the clipped text, budget 1500 tokens)")


if __name__ == "__main__":
    main()
