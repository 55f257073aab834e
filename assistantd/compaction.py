"""Compaction by summary: when a conversation passes a share of the model's window, its
oldest turns are summarized by the model into one stored summary that stands in for them
in later requests. The originals stay in the database and in exports; the system prompt
is never summarized away.
"""

from __future__ import annotations

from typing import Any

from assistantd import tokens
from assistantd.providers import Completion, Provider, Providers
from assistantd.usage import kind_var

PROMPT = (
    "You COMPACT a conversation for its own continuation: write a concise summary of the "
    "conversation below that keeps every fact, name, number, decision, identifier and open "
    "question the participants may need later (quote identifiers exactly). Start from the "
    "earlier summary, if there is one, and fold the new turns into it. Reply with the "
    "summary only."
)
KEEP_SHARE = 0.4  # of the budget, left to the newest turns after a compaction


def summary_system(system_text: str | None, summary: str | None) -> dict[str, Any] | None:
    """The system message a request starts with: the prompt, then the running summary."""
    parts = [system_text] if system_text else []
    if summary:
        parts.append("Summary of the earlier conversation:\n" + summary)
    return {"role": "system", "content": "\n\n".join(parts)} if parts else None


def needs_compaction(total_tokens: int, budget: int, threshold: float) -> bool:
    return total_tokens > threshold * budget


def split_point(history: list[dict[str, Any]], budget: int) -> int:
    """How many of the oldest messages to fold, keeping the newest within KEEP_SHARE."""
    keep, used = len(history), 0
    while keep > 0:
        cost = tokens.message_tokens(history[keep - 1])
        if used + cost > KEEP_SHARE * budget:
            break
        used += cost
        keep -= 1
    # Do not leave an answer without its question at the front of what is kept.
    while keep < len(history) and history[keep]["role"] == "assistant":
        keep += 1
    return keep


async def compact(
    providers: Providers,
    provider: Provider,
    model: str,
    window: int,
    previous: str | None,
    old: list[dict[str, Any]],
) -> str:
    """Fold ``old`` messages into ``previous`` with as few requests as the window allows,
    each of which fits it."""
    answer_room = max(64, min(1024, window // 6))
    room = (
        window - answer_room - tokens.estimate(PROMPT) - 3 * tokens.PER_MESSAGE - tokens.PER_REQUEST
    )
    summary = previous
    piece: list[str] = []
    used = tokens.estimate(summary or "")
    token = kind_var.set("compact")
    try:
        for m in old:
            line = f"{m['role']}: {m['content']}"
            cost = tokens.estimate(line) + 1
            if cost > room // 2:  # one huge message: keep its start
                line = line[: max(16, (room // 2) * 3)]
                cost = tokens.estimate(line) + 1
            if piece and used + cost > room:
                summary = await _one(providers, provider, model, summary, piece, answer_room)
                piece, used = [], tokens.estimate(summary)
            piece.append(line)
            used += cost
        if piece:
            summary = await _one(providers, provider, model, summary, piece, answer_room)
    finally:
        kind_var.reset(token)
    return summary or ""


async def _one(
    providers: Providers,
    provider: Provider,
    model: str,
    previous: str | None,
    lines: list[str],
    max_tokens: int,
) -> str:
    body = ("Earlier summary:\n" + previous + "\n\n" if previous else "") + "Conversation:\n"
    messages = [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": body + "\n".join(lines)},
    ]
    out = await providers.complete(
        provider, model, messages, Completion(), stream=False, max_tokens=max_tokens, temperature=0
    )
    return out.text.strip()
