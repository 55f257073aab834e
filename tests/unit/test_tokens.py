"""tokens: estimates and fitting a history into a window (in-process, no daemon)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from assistantd import tokens


def msg(role: str, words: int) -> dict[str, object]:
    return {"role": role, "content": " ".join(["word"] * words)}


def test_estimate_counts_cjk_near_one_token_per_character() -> None:
    """A CJK sentence is estimated at about one token per character, never at its word count."""
    assert tokens.estimate("日本語の文章です") == 8  # 24 bytes / 3
    assert tokens.estimate("one two three") == 5  # 13 bytes / 3, above 3 words


def test_stored_usage_beats_the_estimate() -> None:
    """A message with the provider's token count uses it instead of the estimate."""
    assert tokens.message_tokens({"content": "x" * 300, "tokens": 7}) == 7 + tokens.PER_MESSAGE


def test_fit_keeps_everything_that_fits() -> None:
    """A history inside the budget is sent whole, with nothing trimmed."""
    history = [msg("user", 5), msg("assistant", 5), msg("user", 5)]
    got = tokens.fit({"role": "system", "content": "be brief"}, history, 1000)
    assert got.trimmed == 0
    assert got.messages[0]["role"] == "system" and got.messages[1:] == history


def test_fit_drops_the_oldest_turns_and_keeps_the_system_prompt() -> None:
    """Over budget, the oldest messages go first; the system prompt and the new turn stay."""
    history = [msg("user", 100), msg("assistant", 100), msg("user", 10)]
    system = {"role": "system", "content": "be brief"}
    got = tokens.fit(system, history, 200)
    assert got.messages == [system, history[2]]
    assert got.trimmed == 2
    assert got.prompt_tokens <= 200


def test_fit_never_opens_on_an_answer_without_its_question() -> None:
    """When trimming would leave an assistant answer first, that answer goes too."""
    history = [msg("user", 60), msg("assistant", 10), msg("user", 10)]
    got = tokens.fit(None, history, 60)
    assert [m["role"] for m in got.messages] == ["user"]
    assert got.trimmed == 2


def test_fit_refuses_a_new_turn_that_cannot_fit() -> None:
    """A new message larger than the budget raises TooLong with the sizes."""
    with pytest.raises(tokens.TooLong) as e:
        tokens.fit(None, [msg("user", 500)], 100)
    assert e.value.budget == 100 and e.value.needed > 100


@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 80)), min_size=1),
    st.integers(50, 2000),
)
def test_fit_result_is_within_budget_and_a_suffix(
    shape: list[tuple[str, int]], budget: int
) -> None:
    """Whatever the history, a fit is a suffix of it that is within the budget."""
    history = [msg(role, n) for role, n in shape]
    try:
        got = tokens.fit(None, history, budget)
    except tokens.TooLong:
        return
    assert got.prompt_tokens <= budget
    assert got.messages == history[got.trimmed :]
    assert got.messages[-1] is history[-1]
