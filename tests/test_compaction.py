"""Compaction by summary: long conversations on a small window keep their earliest facts
through a stored summary, no request exceeds the window, and the originals stay."""

from __future__ import annotations

from typing import Any

from tests.conftest import Daemon, fake_provider_config
from tests.upstream import Upstream

WINDOW = '[models."fake-4k"]\ncontext_window = 4096\n'


def _talk(d: Daemon, turns: int, **extra: Any) -> tuple[str, list[dict[str, Any]]]:
    cid = None
    results = []
    for i in range(turns):
        r = d.call(
            "chat/send",
            {
                "message": f"FACT-{i} " + "filler words here " * 12,
                "model": "fake-4k",
                "conversation_id": cid,
                **extra,
            },
        )
        cid = r["conversation_id"]
        results.append(r)
    assert cid is not None
    return cid, results


def test_200_turns_keep_the_earliest_facts(make_daemon: Any, upstream: Upstream) -> None:
    """With compact = "summarize", a 200-turn chat on a 4k window still recalls FACT-0, and no
    request exceeds the window."""
    d = make_daemon(
        fake_provider_config(upstream, extra=WINDOW).replace(
            'default_model = "fake-echo"', 'default_model = "fake-echo"\ncompact = "summarize"'
        )
    )
    cid, results = _talk(d, 200)
    compactions = [r["compacted"] for r in results if r["compacted"]]
    assert len(compactions) >= 3
    assert all(r["trimmed"] == 0 for r in results)
    assert all(req["prompt_tokens"] <= 4096 for req in upstream.requests)
    recall = d.call("chat/send", {"message": "[[recall]]", "conversation_id": cid})["text"].split()
    assert "FACT-0" in recall and "FACT-199" in recall and len(recall) == 200
    conv = d.call("conversations/get", {"id": cid})
    assert len(conv["messages"]) == 402  # the originals stay
    md = d.call("conversations/export", {"id": cid, "format": "markdown"})["content"]
    assert "FACT-0 filler" in md
    compact_requests = [
        q for q in upstream.requests if "COMPACT" in q["body"]["messages"][0]["content"]
    ]
    assert compact_requests and all(q["prompt_tokens"] <= 4096 for q in compact_requests)
    kinds = d.call("usage/report", {"group_by": "model"})["total"]["requests"]
    assert kinds == len(upstream.requests)  # compaction requests are in the ledger too


def test_trimming_forgets_and_per_request_strategy(make_daemon: Any, upstream: Upstream) -> None:
    """The default (trim) loses the earliest facts; compact="summarize" per request keeps them."""
    d = make_daemon(fake_provider_config(upstream, extra=WINDOW))
    cid, results = _talk(d, 40)
    assert results[-1]["trimmed"] > 0 and all(r["compacted"] == 0 for r in results)
    recall = d.call("chat/send", {"message": "[[recall]]", "conversation_id": cid})["text"]
    assert "FACT-0 " not in recall + " "
    cid2, results2 = _talk(d, 40, compact="summarize")
    assert any(r["compacted"] for r in results2)
    recall2 = d.call("chat/send", {"message": "[[recall]]", "conversation_id": cid2})["text"]
    assert "FACT-0" in recall2.split()


def test_system_prompt_survives(make_daemon: Any, upstream: Upstream) -> None:
    """The system prompt is never summarized away: it leads every request after compaction."""
    d = make_daemon(fake_provider_config(upstream, extra=WINDOW))
    cid, _ = _talk(d, 1, system="SYSTEM-RULE stay polite", compact="summarize")
    for i in range(40):
        d.call(
            "chat/send",
            {
                "message": f"FACT-x{i} " + "more words " * 20,
                "conversation_id": cid,
                "compact": "summarize",
            },
        )
    last = upstream.requests[-1]["body"]["messages"][0]["content"]
    assert (
        last.startswith("SYSTEM-RULE stay polite") and "Summary of the earlier conversation" in last
    )
