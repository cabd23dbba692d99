"""Per-model token prices (issue 17) and what a tenant's calls were billed.

tenants.yaml declares prices per model, in the currency the provider bills (USD for OpenAI and DeepSeek), per
1M tokens: `input` (prompt tokens), `cached_input` (prompt tokens the provider served from its prompt cache; the
`input` price when omitted) and `output` (completion tokens). A top-level `prices:` map applies to every tenant;
a tenant's `llm.prices:` adds models or overrides them for that tenant:

    prices:
      gpt-4o-mini: {input: 0.15, cached_input: 0.075, output: 0.60}
      deepseek-chat: {input: 0.27, cached_input: 0.07, output: 1.10}

A call's billed cost is (prompt - cached) x input + cached x cached_input + completion x output, per 1M tokens.
A model the file does not price has an unknown cost: reports say so (None, and name the model), never 0. Usage rows
name the model the server answered with, which may be a dated snapshot of the configured name
(`gpt-4o-mini-2024-07-18`): such a name takes its base model's price; any other name needs its own entry (a
`gpt-4o` price never prices `gpt-4o-mini`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from collections import defaultdict
from typing import Any, Iterable, Mapping

from shared.config.tenant_schema import FieldError, Path

PRICE_KEYS = ("input", "cached_input", "output")
PER_TOKENS = Decimal(1_000_000)
MAX_PRICE = 1_000_000  # per 1M tokens: anything above is a typo (a price per token written per 1M, or cents)
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")  # gpt-4o-mini-2024-07-18, gpt-4-0613


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal         # per 1M prompt tokens
    cached_input: Decimal  # per 1M prompt tokens served from the prompt cache
    output: Decimal        # per 1M completion tokens

    def cost(self, prompt_tokens: int, cached_prompt_tokens: int, completion_tokens: int) -> Decimal:
        cached = max(0, min(cached_prompt_tokens, prompt_tokens))
        return ((prompt_tokens - cached) * self.input + cached * self.cached_input
                + completion_tokens * self.output) / PER_TOKENS


def _amount(value: Any, where: str, path: Path) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_PRICE:
        raise FieldError(f"{where} must be a number from 0 to {MAX_PRICE:,} (price per 1M tokens)", path)
    return Decimal(str(value))


def _model_price(block: Any, where: str, path: Path) -> ModelPrice:
    if not isinstance(block, Mapping):
        raise FieldError(f"{where} must be a mapping of {', '.join(PRICE_KEYS)} (prices per 1M tokens)", path)
    unknown = sorted(str(k) for k in set(block) - set(PRICE_KEYS))
    if unknown:
        raise FieldError(f"{where}: unknown key(s) {', '.join(unknown)}: a price has {', '.join(PRICE_KEYS)}",
                         path + (unknown[0],))
    for key in ("input", "output"):
        if key not in block:
            raise FieldError(f"{where}.{key} is not set (price per 1M tokens)", path)
    amounts = {key: _amount(block[key], f"{where}.{key}", path + (key,)) for key in PRICE_KEYS if key in block}
    amounts.setdefault("cached_input", amounts["input"])
    return ModelPrice(**amounts)


def parse_prices(block: Any, where: str, path: Path) -> tuple[dict[str, ModelPrice], list[FieldError]]:
    """A `prices:` map (None: no prices) as {model: ModelPrice}, and one FieldError per wrong model entry, each
    naming the key (`prices.gpt-4o.output must be ...`) at its path (for the YAML line)."""
    if block is None:
        return {}, []
    if not isinstance(block, Mapping):
        return {}, [FieldError(f"{where} must be a mapping of model names to prices", path)]
    prices, errors = {}, []
    for model, entry in block.items():
        if not isinstance(model, str) or not model.strip():
            errors.append(FieldError(f"{where}: model names must be non-empty strings", path))
            continue
        try:
            prices[model.strip()] = _model_price(entry, f"{where}.{model}", path + (model,))
        except FieldError as exc:
            errors.append(exc)
    return prices, errors


def price_for(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    """The price of `model`: its own entry, else (a dated snapshot name) its base model's; None: unknown."""
    if model in prices:
        return prices[model]
    snapshot = _SNAPSHOT.search(model or "")
    return prices.get(model[:snapshot.start()]) if snapshot else None


@dataclass(frozen=True)
class Bill:
    """The billed cost of some usage: None when a model that used tokens has no price (named in `unpriced`)."""

    cost: Decimal | None
    cached_prompt_tokens: int
    unpriced: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        """`billed_cost` as exact decimal text (a day's cost may be a fraction of a cent): JSON numbers are floats."""
        return {"billed_cost": None if self.cost is None else format(Decimal(self.cost).normalize(), "f"),
                "cached_prompt_tokens": self.cached_prompt_tokens, "unpriced_models": list(self.unpriced)}


def bill(rows: Iterable[Mapping[str, Any]], prices: Mapping[str, ModelPrice]) -> Bill:
    """The cost of usage rows summed per model (`model`, `prompt_tokens`, `cached_prompt_tokens`,
    `completion_tokens`). Calls without tokens (a voice note's transcription, billed by the minute) cost nothing
    here and need no price."""
    cost, cached, unpriced = Decimal(0), 0, []
    for row in rows:
        prompt, completion = int(row["prompt_tokens"] or 0), int(row["completion_tokens"] or 0)
        row_cached = int(row.get("cached_prompt_tokens") or 0)
        cached += row_cached
        if not prompt and not completion:
            continue
        price = price_for(prices, row["model"])
        if price is None:
            unpriced.append(row["model"])
        else:
            cost += price.cost(prompt, row_cached, completion)
    unpriced = sorted(set(unpriced))
    return Bill(None if unpriced else cost, cached, tuple(unpriced))


def bills_by_day(rows: Iterable[Mapping[str, Any]], prices: Mapping[str, ModelPrice]) -> dict[Any, Bill]:
    """`bill` of each day of usage rows summed per day and model (each row has a `day`)."""
    days: dict[Any, list] = defaultdict(list)
    for row in rows:
        days[row["day"]].append(row)
    return {day: bill(day_rows, prices) for day, day_rows in days.items()}
