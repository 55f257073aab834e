"""summarize: splitting long text into chunks under a token budget (in-process)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from assistantd import summarize, tokens


def test_short_text_is_one_chunk() -> None:
    """Text within the budget comes back whole, stripped."""
    assert summarize.split("  a short page  ", 100) == ["a short page"]
    assert summarize.split("   ", 100) == []


def test_paragraphs_are_the_first_boundary() -> None:
    """Chunks are cut between paragraphs when paragraphs fit the budget."""
    paras = [" ".join([f"p{i}"] * 30) for i in range(6)]
    chunks = summarize.split("\n\n".join(paras), 100)
    assert len(chunks) > 1
    for chunk in chunks:
        assert tokens.estimate(chunk) <= 100
        for piece in chunk.split("\n\n"):
            assert piece in paras  # no paragraph was cut


def test_text_without_any_boundary_is_cut_by_characters() -> None:
    """A run with no spaces or newlines is still split under the budget."""
    chunks = summarize.split("x" * 5000, 50)
    assert all(tokens.estimate(c) <= 50 for c in chunks)
    assert "".join(chunks) == "x" * 5000


def test_group_halves_the_number_of_partial_summaries() -> None:
    """Reduce inputs hold two or more partial summaries each, so each round halves the count."""
    items = [" ".join(["s"] * 40) for _ in range(8)]
    groups = summarize.group(items, 200)
    assert len(groups) <= 4
    assert all(tokens.estimate(g) <= 200 for g in groups)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab あ.\n")), min_size=0, max_size=3000),
    st.integers(5, 400),
)
def test_every_chunk_is_within_budget_and_no_word_is_lost(text: str, budget: int) -> None:
    """Any text splits into chunks under the budget that keep all of its words in order."""
    chunks = summarize.split(text, budget)
    assert all(tokens.estimate(c) <= budget for c in chunks)
    joined = "".join("".join(c.split()) for c in chunks)
    assert joined == "".join(text.split())
