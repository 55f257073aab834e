"""The Anthropic, OpenRouter, Groq, DeepSeek and Mistral presets: their routing, their key
env vars, and the OpenAI params a provider does not take (left out, with a warning)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from assistantd import config, providers
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.upstream import Upstream

NEW = {
    "anthropic": "ANTHROPIC_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "groq": "GROQ_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "mistral": "MISTRAL_API_KEY",
}


def send(d: Daemon, **params: Any) -> dict[str, Any]:
    with d.client() as c:
        result: dict[str, Any] = c.call("chat/send", params)
    return result


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("claude-sonnet-4-5", "anthropic"),
        ("anthropic/claude-sonnet-4.5", "openrouter"),
        ("meta-llama/llama-3.3-70b-instruct", "openrouter"),
        ("llama-3.3-70b-versatile", "groq"),
        ("llama-3.1-8b-instant", "groq"),
        ("deepseek-chat", "deepseek"),
        ("deepseek-reasoner", "deepseek"),
        ("mistral-large-latest", "mistral"),
        ("codestral-latest", "mistral"),
        ("open-mistral-nemo", "mistral"),
        ("gpt-4.1", "openai"),
        ("gemini-2.5-pro", "gemini"),
        ("grok-4", "xai"),
    ],
)
def test_presets_route_their_models(model: str, provider: str) -> None:
    """Each preset's model patterns route its own model ids to it."""
    assert providers.Providers(config.Config()).route(model).name == provider


def test_config_patterns_beat_preset_patterns() -> None:
    """A model the config's own patterns name goes there, not to a preset whose pattern
    also matches it (deepseek-*, openrouter's */*)."""
    cfg = config.parse(
        '[providers.ollama]\nmodels = ["deepseek-r1:*", "qwen/*"]\n'
        '[providers.box]\nbase_url = "http://127.0.0.1:9/v1"\nmodels = ["Qwen/*"]\n'
    )
    ps = providers.Providers(cfg)
    assert ps.route("deepseek-r1:7b").name == "ollama"
    assert ps.route("qwen/qwen3-8b").name == "ollama"
    assert ps.route("Qwen/Qwen2.5-7B-Instruct").name == "box"
    assert ps.route("deepseek-chat").name == "deepseek"
    assert ps.route("mistralai/mistral-7b").name == "openrouter"


def test_default_provider_beats_the_broad_pattern() -> None:
    """With a default_provider in the config, a vendor/model id nothing else names goes
    there, not to openrouter's */*; a preset's own family pattern still wins."""
    ps = providers.Providers(config.parse('default_provider = "llama"\n'))
    assert ps.route("Qwen/Qwen2.5-Coder-7B").name == "llama"
    assert ps.route("claude-opus-4-1").name == "anthropic"
    assert providers.Providers(config.Config()).route("Qwen/Qwen2.5-Coder-7B").name == (
        "openrouter"
    )


def test_presets_capabilities() -> None:
    """Anthropic and Groq take no logprobs; Mistral takes neither logprobs nor
    stream_options; DeepSeek and OpenRouter take both; a config key overrides a preset's."""
    by = providers.build(config.parse("[providers.groq]\nlogprobs = true\n"))
    got = {n: (by[n].logprobs, by[n].stream_options) for n in NEW}
    assert got == {
        "anthropic": (False, True),
        "openrouter": (True, True),
        "groq": (True, True),
        "deepseek": (True, True),
        "mistral": (False, False),
    }
    assert providers.build(config.Config())["groq"].logprobs is False


def test_params_the_provider_does_not_take_are_left_out(
    make_daemon: Any, upstream: Upstream
) -> None:
    """With logprobs = false and stream_options = false, the request carries neither, and
    the result warns that logprobs were not asked for and no usage came."""
    cfg = fake_provider_config(upstream).replace(
        'key_env = "FAKE_API_KEY"',
        'key_env = "FAKE_API_KEY"\nlogprobs = false\nstream_options = false',
    )
    d: Daemon = make_daemon(cfg)
    r = send(d, message="hi", logprobs=True, top_logprobs=2)
    body = upstream.requests[-1]["body"]
    assert body["stream"] is True
    assert not {"logprobs", "top_logprobs", "stream_options"} & set(body)
    assert r["text"] == "You said: hi" and r["logprobs"] is None and r["usage"] is None
    assert any("does not take logprobs" in w for w in r["warnings"]), r["warnings"]
    assert any("sent no token usage" in w for w in r["warnings"]), r["warnings"]
    assert not any("ignored logprobs" in w for w in r["warnings"])


def test_params_sent_where_taken(daemon: Daemon, upstream: Upstream) -> None:
    """A provider that takes logprobs and stream_options gets both and no warning."""
    r = send(daemon, message="hi", top_logprobs=2)
    body = upstream.requests[-1]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert body["stream_options"] == {"include_usage": True}
    assert r["warnings"] == [] and r["usage"] is not None and r["logprobs"]


def test_mistral_preset_request_shape(make_daemon: Any, upstream: Upstream) -> None:
    """The mistral preset pointed at the loopback upstream sends no stream_options and no
    logprobs, and its key from MISTRAL_API_KEY."""
    cfg = f'[providers.mistral]\nbase_url = "{upstream.base_url}"\n'
    d: Daemon = make_daemon(cfg, env={"MISTRAL_API_KEY": "sk-mistral-test"})
    r = send(d, message="hi", model="mistral-small-latest", logprobs=True)
    assert r["provider"] == "mistral" and r["text"] == "You said: hi"
    req = upstream.requests[-1]
    assert not {"logprobs", "top_logprobs", "stream_options"} & set(req["body"])
    assert req["headers"]["authorization"] == "Bearer sk-mistral-test"
    assert any("mistral does not take logprobs" in w for w in r["warnings"])


def test_providers_and_keys_list_the_new_presets(make_daemon: Any) -> None:
    """`assistantctl providers` and keys/list show each new preset with its env var."""
    d: Daemon = make_daemon("", env={"GROQ_API_KEY": "gsk-test-1234"})
    keys = {k["provider"]: k for k in d.call("keys/list")["keys"]}
    for name, var in NEW.items():
        assert keys[name]["env_var"] == var
    assert keys["groq"]["source"] == "env" and keys["groq"]["hint"] == "1234"
    run = [sys.executable, "-m", "assistantd.cli", "--socket", str(d.socket)]
    out = subprocess.run(
        [*run, "providers"], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:] if line.strip()}
    for name, var in NEW.items():
        assert var in rows[name], out.stdout
    listed = json.loads(
        subprocess.run(
            [*run, "--json", "providers"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=True,
        ).stdout
    )
    info = {p["name"]: p for p in listed["providers"]}
    assert info["mistral"]["stream_options"] is False and info["mistral"]["logprobs"] is False
    assert info["openrouter"]["models"] == ["*/*"]
