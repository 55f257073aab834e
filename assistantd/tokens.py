"""Context windows, token estimates, and trimming a history to fit a window.

No tokenizer is bundled (they are large and per model). The estimate is deliberately
generous: the larger of the word count and bytes / 3 (which counts CJK text near one
token per character). Where the provider reported usage for a stored answer, that
exact count is used instead. A provider's "context length exceeded" still gets one
tighter retry in ``chat``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PER_MESSAGE = 6  # role markers and separators the chat template adds
PER_REQUEST = 8

# Known windows, in tokens, by glob pattern (first match wins). The config overrides.
KNOWN_WINDOWS: list[tuple[str, int]] = [
    ("gpt-4.1*", 1_047_576),
    ("gpt-5*", 400_000),
    ("gpt-4o*", 128_000),
    ("chatgpt-4o*", 128_000),
    ("gpt-4-turbo*", 128_000),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo*", 16_385),
    ("o1*", 200_000),
    ("o3*", 200_000),
    ("o4*", 200_000),
    ("gemini-*", 1_048_576),
    ("grok-4*", 256_000),
    ("grok-*", 131_072),
    ("plamo-*", 32_768),
]
DEFAULT_WINDOW = 128_000


def known_window(model: str) -> int | None:
    for pattern, window in KNOWN_WINDOWS:
        if fnmatch.fnmatchcase(model, pattern):
            return window
    return None


def estimate(text: str) -> int:
    return max(len(text.split()), math.ceil(len(text.encode("utf-8")) / 3))


def message_tokens(message: dict[str, Any]) -> int:
    """A message's tokens: the provider's count when stored, else the estimate."""
    exact = message.get("tokens")
    if isinstance(exact, int) and exact > 0:
        return exact + PER_MESSAGE
    return estimate(str(message.get("content") or "")) + PER_MESSAGE


@dataclass
class Fit:
    messages: list[dict[str, Any]]
    trimmed: int
    prompt_tokens: int


class TooLong(Exception):
    """The newest message alone (with the system prompt) does not fit the window."""

    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(f"the message needs about {needed} tokens; the budget is {budget}")
        self.needed, self.budget = needed, budget


def fit(system: dict[str, Any] | None, history: Sequence[dict[str, Any]], budget: int) -> Fit:
    """Leave out the oldest history messages until system + history fits ``budget``.

    The last message (the new user turn) and the system prompt are never left out. An
    assistant message is never kept without the user turn before it.
    """
    costs = [message_tokens(m) for m in history]
    fixed = PER_REQUEST + (message_tokens(system) if system else 0)
    total = fixed + sum(costs)
    start = 0
    while total > budget and start < len(history) - 1:
        total -= costs[start]
        start += 1
    # Do not open the history on an assistant answer whose question was left out.
    while start < len(history) - 1 and history[start].get("role") == "assistant":
        total -= costs[start]
        start += 1
    if total > budget:
        raise TooLong(total, budget)
    kept = ([system] if system else []) + list(history[start:])
    return Fit(kept, start, total)
