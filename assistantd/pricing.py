"""Prices in USD per million tokens, for a cost next to every answer.

The built-in table is dated: providers change prices, so ``[models."NAME"] price_in =
...`` in the config overrides it. A model with no known price has no cost (None), never
a guessed one; local providers cost nothing.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from assistantd.config import Config

PRICES_AS_OF = "2025-08-15"


@dataclass(frozen=True)
class Price:
    input: float
    cached_input: float
    output: float


# Most specific pattern first; (input, cached input, output), USD per 1M tokens, as
# published by each provider on PRICES_AS_OF (Gemini 2.5 Pro: the <=200k-token tier).
BUILT_IN: list[tuple[str, Price]] = [
    ("gpt-4.1-nano*", Price(0.10, 0.025, 0.40)),
    ("gpt-4.1-mini*", Price(0.40, 0.10, 1.60)),
    ("gpt-4.1*", Price(2.00, 0.50, 8.00)),
    ("gpt-4o-mini*", Price(0.15, 0.075, 0.60)),
    ("gpt-4o*", Price(2.50, 1.25, 10.00)),
    ("chatgpt-4o*", Price(5.00, 5.00, 15.00)),
    ("gpt-5-nano*", Price(0.05, 0.005, 0.40)),
    ("gpt-5-mini*", Price(0.25, 0.025, 2.00)),
    ("gpt-5*", Price(1.25, 0.125, 10.00)),
    ("o4-mini*", Price(1.10, 0.275, 4.40)),
    ("o3-mini*", Price(1.10, 0.55, 4.40)),
    ("o3*", Price(2.00, 0.50, 8.00)),
    ("gemini-2.5-pro*", Price(1.25, 0.31, 10.00)),
    ("gemini-2.5-flash-lite*", Price(0.10, 0.025, 0.40)),
    ("gemini-2.5-flash*", Price(0.30, 0.075, 2.50)),
    ("gemini-2.0-flash*", Price(0.10, 0.025, 0.40)),
    ("grok-4*", Price(3.00, 0.75, 15.00)),
    ("grok-3-mini*", Price(0.30, 0.075, 0.50)),
    ("grok-3*", Price(3.00, 0.75, 15.00)),
]

FREE = Price(0.0, 0.0, 0.0)


def price_for(model: str, config: Config, local: bool = False) -> Price | None:
    """The config's price for ``model``, else the built-in one, else None (unknown)."""
    mc = config.models.get(model)
    if mc is not None and mc.price_in is not None and mc.price_out is not None:
        cached = mc.price_cached_in if mc.price_cached_in is not None else mc.price_in
        return Price(mc.price_in, cached, mc.price_out)
    if local:
        return FREE
    for pattern, price in BUILT_IN:
        if fnmatch.fnmatchcase(model, pattern):
            return price
    return None


def cost(price: Price | None, usage: dict[str, int]) -> float | None:
    """USD for one request's usage; cached prompt tokens at the cached rate."""
    if price is None:
        return None
    cached = usage.get("cached_tokens") or 0
    fresh = max(0, usage.get("prompt_tokens", 0) - cached)
    total = fresh * price.input + cached * price.cached_input
    total += usage.get("completion_tokens", 0) * price.output
    return round(total / 1_000_000, 8)
