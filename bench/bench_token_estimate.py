"""How long the token estimate and `clip_text` take on a 60,000-character message (issue 10).

Prints microseconds per call (best of 5 repeats) for English, Chinese and mixed text, next to the old estimate
(chars/4) and the old clip (4 characters per token), and what each estimate says. Then (issue 17) the estimate and
chars/4 against the real counts of OpenAI's tokenisers (o200k_base: gpt-4o/4.1/o-series, cl100k_base: gpt-4/3.5,
`shared.conversation.tokens.counter_for`) on English, Chinese, Japanese and Russian messages, and what a real count
costs. No thresholds: numbers only.

    .venv/bin/python bench/bench_token_estimate.py
"""
from __future__ import annotations

import math
import random
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.conversation.tokens import MIN_CLIP_TOKENS, clip_text, counter_for, estimate_text  # noqa: E402

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
    real_counts()


MESSAGES = {  # what users write, 10 times over (about a screenful)
    "english": "Remember I have a dentist appointment tomorrow at 2 PM, and remind me to call the office first. ",
    "chinese": "我明天下午两点要去看牙医，请提醒我先给办公室打电话。这个星期我还有什么安排？",
    "japanese": "明日の午後2時に歯医者の予約があることを覚えておいて、先にオフィスに電話するよう思い出させてください。",
    "russian": "Напомни мне завтра в два часа позвонить в клинику и записаться к стоматологу на пятницу. ",
}


def real_counts() -> None:
    """The estimate and chars/4 against the real tokenisers: counts, and estimate / real (1.00 = exact)."""
    o200k, cl100k = counter_for("gpt-4o-mini"), counter_for("gpt-4")
    o200k("warm up"), cl100k("warm up")  # the tables load once per process (~0.3 s)
    print(f"\n{'text':8} {'chars':>6}  {'chars/4':>7} {'estimate':>8} {'o200k':>6} {'cl100k':>6}  "
          f"{'chars/4÷o200k':>13} {'est÷o200k':>9} {'est÷cl100k':>10}  {'o200k us':>8}")
    for name, message in MESSAGES.items():
        text = message * 10
        old, est, real, real_cl = old_estimate(text), estimate_text(text), o200k(text), cl100k(text)
        print(f"{name:8} {len(text):>6}  {old:>7} {est:>8} {real:>6} {real_cl:>6}  {old / real:>13.2f} "
              f"{est / real:>9.2f} {est / real_cl:>10.2f}  {micros(lambda: o200k(text)):>8.1f}")
    chinese = samples()["chinese"]
    took = micros(lambda: o200k(chinese), 3, 3)
    print(f"60,000 random CJK ideographs: o200k {o200k(chinese)} tokens in {took:.0f} us, "
          f"estimate {estimate_text(chinese)} in {micros(lambda: estimate_text(chinese)):.0f} us")


if __name__ == "__main__":
    main()
