"""Usage and cost: a ledger of every provider request across clients, priced where the
price is known (built in, or overridden in the config), free for local models, and
never guessed for unknown models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from assistantd import pricing
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.upstream import Upstream

PRICED = """
[models."fake-priced"]
price_in = 2.0
price_cached_in = 0.5
price_out = 8.0

[models."gpt-4.1-mini"]
price_in = 1.0
price_out = 1.0

[providers.localfake]
base_url = "{url}"
kind = "ollama"
needs_key = false
models = ["tiny-local"]
"""


@pytest.fixture
def priced(make_daemon: Any, upstream: Upstream) -> Daemon:
    d: Daemon = make_daemon(
        fake_provider_config(upstream, extra=PRICED.format(url=upstream.base_url))
    )
    return d


def test_totals_match_provider_usage_across_clients(priced: Daemon) -> None:
    """usage/report totals equal the usage the provider reported, for chats from two clients."""
    results = [priced.call("chat/send", {"message": f"socket client {i}"}) for i in range(3)]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantd.cli",
            "--socket",
            str(priced.socket),
            "--json",
            "chat",
            "from the CLI [[words:7]]",
        ],
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        env=os.environ.copy(),
    )
    results.append(json.loads(out.stdout))
    report = priced.call("usage/report", {"group_by": "model"})
    total = report["total"]
    assert total["requests"] == 4
    assert total["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in results)
    assert total["completion_tokens"] == sum(r["usage"]["completion_tokens"] for r in results)
    assert [row["key"] for row in report["rows"]] == ["fake-echo"]


def test_cost_priced_overridden_unpriced_and_local(priced: Daemon) -> None:
    """Cost uses the config's price, overrides the built-in table, is 0 locally, and null when unknown."""
    r = priced.call("chat/send", {"message": "hello", "model": "fake-priced"})
    u = r["usage"]
    assert r["cost"] == pytest.approx(
        (u["prompt_tokens"] * 2.0 + u["completion_tokens"] * 8.0) / 1e6
    )
    over = priced.call("chat/send", {"message": "hi", "model": "gpt-4.1-mini", "provider": "fake"})
    ou = over["usage"]
    assert over["cost"] == pytest.approx((ou["prompt_tokens"] + ou["completion_tokens"]) / 1e6)
    assert over["cost"] != pricing.cost(pricing.BUILT_IN[1][1], ou)
    unknown = priced.call("chat/send", {"message": "hi", "model": "fake-echo"})
    assert unknown["usage"] is not None and unknown["cost"] is None
    local = priced.call("chat/send", {"message": "hi", "model": "tiny-local"})
    assert local["cost"] == 0.0
    rows = {row["key"]: row for row in priced.call("usage/report", {"group_by": "model"})["rows"]}
    assert rows["fake-echo"]["cost"] is None and rows["fake-echo"]["unpriced_requests"] == 1
    assert rows["fake-priced"]["cost"] == pytest.approx(r["cost"])
    assert rows["tiny-local"]["cost"] == 0.0
    stored = priced.call("conversations/get", {"id": r["conversation_id"]})["messages"][-1]
    assert stored["usage"]["prompt_tokens"] == u["prompt_tokens"]


def test_built_in_price() -> None:
    """A well-known model has a built-in price; cached tokens are charged at the cached rate."""
    from assistantd.config import Config

    price = pricing.price_for("gpt-4.1", Config())
    assert price == pricing.Price(2.0, 0.5, 8.0)
    usage = {"prompt_tokens": 1000, "cached_tokens": 400, "completion_tokens": 100}
    assert pricing.cost(price, usage) == pytest.approx((600 * 2 + 400 * 0.5 + 100 * 8) / 1e6)
    assert pricing.price_for("some-new-model", Config()) is None


def test_deleted_conversations_still_count(priced: Daemon) -> None:
    """Spend outlives a deleted conversation; grouping by day and conversation works."""
    r = priced.call("chat/send", {"message": "to delete", "model": "fake-priced"})
    priced.call("conversations/delete", {"id": r["conversation_id"]})
    by_day = priced.call("usage/report", {"group_by": "day"})
    assert by_day["total"]["requests"] == 1 and len(by_day["rows"]) == 1
    assert by_day["rows"][0]["key"] == by_day["rows"][0]["key"][:10]
    by_conv = priced.call("usage/report", {"group_by": "conversation"})
    assert by_conv["rows"][0]["key"] == r["conversation_id"]
    future = priced.call("usage/report", {"since": "2999-01-01"})
    assert future["total"]["requests"] == 0


def test_ctl_usage_table(priced: Daemon) -> None:
    """`assistantctl usage --group-by model` prints tokens and cost, 'unknown' when unpriced."""
    priced.call("chat/send", {"message": "a", "model": "fake-priced"})
    priced.call("chat/send", {"message": "b", "model": "fake-echo"})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantd.cli",
            "--socket",
            str(priced.socket),
            "usage",
            "--group-by",
            "model",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["MODEL", "REQUESTS"]
    row = {ln.split()[0]: ln for ln in lines[1:]}
    assert row["fake-echo"].rstrip().endswith("unknown")
    report = priced.call("usage/report", {"group_by": "model"})
    cost = {r["key"]: r["cost"] for r in report["rows"]}["fake-priced"]
    assert 0 < cost < 0.01  # a few tokens at $2/$8 per million
    assert row["fake-priced"].split()[-1] == f"${cost:.3g}"
    assert f"${report['total']['cost']:.3g} (+1 unpriced)" in row["TOTAL"]
