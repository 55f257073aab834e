"""compaction: where a long history is cut for folding into a summary (in-process)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from assistantd import compaction, tokens


def msg(role: str, words: int) -> dict[str, object]:
    return {"role": role, "content": " ".join(["word"] * words)}


def test_split_point_keeps_the_newest_turns_within_the_keep_share() -> None:
    """The newest turns that fit in KEEP_SHARE of the budget are kept; the rest fold."""
    history = [msg("user" if i % 2 == 0 else "assistant", 20) for i in range(10)]
    budget = 200
    cut = compaction.split_point(history, budget)
    kept = history[cut:]
    assert 0 < cut < len(history)
    assert sum(tokens.message_tokens(m) for m in kept) <= compaction.KEEP_SHARE * budget
    assert kept[0]["role"] == "user"


def test_summary_system_puts_the_prompt_before_the_summary() -> None:
    """The system message holds the user's prompt first, then the running summary."""
    got = compaction.summary_system("be brief", "they talked about cats")
    assert got is not None
    assert got["content"].startswith("be brief\n\nSummary of the earlier conversation:\n")
    assert compaction.summary_system(None, None) is None


@given(
    st.lists(st.tuples(st.sampled_from(["user", "assistant"]), st.integers(0, 60)), min_size=1),
    st.integers(20, 1000),
)
def test_split_point_never_keeps_an_answer_first(shape: list[tuple[str, int]], budget: int) -> None:
    """What is kept never starts with an assistant answer whose question was folded."""
    history = [msg(role, n) for role, n in shape]
    cut = compaction.split_point(history, budget)
    assert 0 <= cut <= len(history)
    if cut < len(history):
        assert history[cut]["role"] == "user"
