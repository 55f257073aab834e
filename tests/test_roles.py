"""Roles: named prompts and settings from the daemon, built in or from the config, used by
chat/send and summarize/*, remembered by a conversation, reloaded with the config."""

from __future__ import annotations

import time
from typing import Any

import pytest

from assistantd import config, settings
from assistantd.client import RpcError
from assistantd.roles import BUILTIN
from assistantd.summarize import COMBINE_NOTE
from tests.conftest import Daemon, fake_provider_config
from tests.upstream import Upstream

POET = """
[roles.poet]
description = "Answers in verse"
system = "You answer in verse, as a poet of {place}."
model = "fake-poet"
temperature = 0.3
max_tokens = 50
"""


@pytest.fixture
def poet(make_daemon: Any, upstream: Upstream) -> Daemon:
    """A daemon on the loopback upstream with a ``poet`` role in its config."""
    d: Daemon = make_daemon(fake_provider_config(upstream, extra=POET))
    return d


def last(upstream: Upstream) -> dict[str, Any]:
    """The body of the last request the upstream got."""
    body: dict[str, Any] = upstream.requests[-1]["body"]
    return body


def system_of(request: dict[str, Any]) -> str | None:
    first = request["messages"][0]
    return first["content"] if first["role"] == "system" else None


def roles(d: Daemon) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in d.call("roles/list")["roles"]}


def edit_config(d: Daemon, text: str, applied: Any, timeout: float = 15) -> None:
    """Write the daemon's config file and wait until ``applied()`` says the daemon read it
    by itself (no daemon/reload). The file is written again each second it is not: the
    watcher may start watching only after the daemon answers its first request."""
    deadline = time.monotonic() + timeout
    while True:
        d.config_path.write_text(text)
        again = time.monotonic() + 1
        while time.monotonic() < again:
            if applied():
                return
            time.sleep(0.05)
        assert time.monotonic() < deadline, "the daemon did not apply the changed config"


def test_role_reaches_provider(poet: Daemon, upstream: Upstream) -> None:
    """A role's system prompt (vars filled in), model, temperature and max_tokens reach the provider."""
    r = poet.call("chat/send", {"message": "hi", "role": "poet", "vars": {"place": "Kyoto"}})
    req = last(upstream)
    assert system_of(req) == "You answer in verse, as a poet of Kyoto."
    assert req["model"] == "fake-poet" and r["model"] == "fake-poet"
    assert req["temperature"] == 0.3 and req["max_tokens"] == 50
    assert r["role"] == "poet"


def test_explicit_params_beat_role(poet: Daemon, upstream: Upstream) -> None:
    """Explicit system, model, temperature and max_tokens win over the role's values."""
    poet.call(
        "chat/send",
        {
            "message": "hi",
            "role": "poet",
            "system": "Plain prose.",
            "model": "fake-echo",
            "temperature": 1.5,
            "max_tokens": 20,
        },
    )
    req = last(upstream)
    assert system_of(req) == "Plain prose."
    assert (req["model"], req["temperature"], req["max_tokens"]) == ("fake-echo", 1.5, 20)


def test_conversation_keeps_role(poet: Daemon, upstream: Upstream) -> None:
    """Continuing a conversation without naming a role keeps its role's prompt and settings,
    also after a restart."""
    first = poet.call("chat/send", {"message": "one", "role": "poet", "vars": {"place": "Rome"}})
    cid = first["conversation_id"]
    second = poet.call("chat/send", {"message": "two", "conversation_id": cid})
    req = last(upstream)
    assert second["role"] == "poet"
    assert poet.call("conversations/get", {"id": cid})["role"] == "poet"
    assert system_of(req) == "You answer in verse, as a poet of Rome."
    assert (req["model"], req["temperature"], req["max_tokens"]) == ("fake-poet", 0.3, 50)
    poet.stop()
    again = Daemon(poet.config_path.read_text())
    try:
        third = again.call("chat/send", {"message": "three", "conversation_id": cid})
    finally:
        again.stop()
    assert third["role"] == "poet" and last(upstream)["temperature"] == 0.3


def test_unknown_role_is_not_found(daemon: Daemon, upstream: Upstream) -> None:
    """A role that does not exist is -32004 with kind "role", before anything is sent."""
    for method, params in (
        ("chat/send", {"message": "hi", "role": "nope"}),
        ("summarize/text", {"text": "some text", "role": "nope"}),
    ):
        with pytest.raises(RpcError) as e:
            daemon.call(method, params)
        assert e.value.code == -32004 and e.value.data["kind"] == "role", method
    assert upstream.requests == []


def test_builtin_role_prompts(daemon: Daemon, upstream: Upstream) -> None:
    """The built-in shell-command role sends the shell client's prompt with the client's vars."""
    daemon.call(
        "chat/send",
        {
            "message": "list files",
            "role": "shell-command",
            "vars": {"shell": "fish", "os": "Plan9"},
        },
    )
    assert system_of(last(upstream)) == (
        "Turn the user's description into one shell command for fish on Plan9. "
        "Reply with the command only, no prose, no code fences."
    )
    daemon.call("chat/send", {"message": "ls -la", "role": "explain"})
    sent = system_of(last(upstream))
    assert sent is not None and "{os}" not in sent and "{shell}" not in sent  # daemon defaults


def test_override_builtin_without_restart(daemon: Daemon, upstream: Upstream) -> None:
    """A config role named like a built-in replaces its prompt at the next request, no restart;
    removing it brings the built-in back."""
    base = daemon.config_path.read_text()
    edit_config(
        daemon,
        base + '\n[roles.shell-command]\nsystem = "Only {shell} one-liners."\ntemperature = 0\n',
        lambda: roles(daemon)["shell-command"]["source"] == "config",
    )
    daemon.call("chat/send", {"message": "x", "role": "shell-command", "vars": {"shell": "zsh"}})
    assert system_of(last(upstream)) == "Only zsh one-liners."
    assert last(upstream)["temperature"] == 0
    overridden = roles(daemon)["shell-command"]
    assert overridden["description"] == BUILTIN["shell-command"].description  # key by key
    edit_config(daemon, base, lambda: roles(daemon)["shell-command"]["source"] == "builtin")
    daemon.call("chat/send", {"message": "x", "role": "shell-command", "vars": {"shell": "zsh"}})
    assert (system_of(last(upstream)) or "").startswith("Turn the user's description")


def test_roles_list_sources(poet: Daemon) -> None:
    """roles/list gives every built-in role and every config role, with where each comes from."""
    listed = roles(poet)
    assert set(BUILTIN) <= set(listed)
    assert all(listed[n]["source"] == "builtin" for n in BUILTIN)
    assert listed["poet"] == {
        "name": "poet",
        "description": "Answers in verse",
        "source": "config",
        "system": "You answer in verse, as a poet of {place}.",
        "model": "fake-poet",
        "provider": None,
        "temperature": 0.3,
        "max_tokens": 50,
        "compact": None,
    }
    assert listed["code-edit"]["system"].startswith("You rewrite the text given as context")


def test_summarize_uses_its_role(daemon: Daemon, upstream: Upstream) -> None:
    """summarize/* follow the summarize role (built in, or overridden in the config) or the
    role they are given, and the summary's conversation keeps that role."""
    r = daemon.call("summarize/text", {"text": "alpha beta gamma", "title": "T"})
    assert system_of(last(upstream)) == (
        'You SUMMARIZE text titled "T". Write a clear, concise summary of its main points '
        "in the language of the text. No preamble."
    )
    assert r["role"] == "summarize"
    edit_config(
        daemon,
        daemon.config_path.read_text()
        + '\n[roles.summarize]\nsystem = "You SUMMARIZE in one line{about}."\n'
        + "temperature = 0.1\n"
        + '[roles.brief]\nsystem = "You SUMMARIZE in three words."\nmodel = "fake-brief"\n',
        lambda: "brief" in roles(daemon),
    )
    r = daemon.call("summarize/text", {"text": "alpha beta gamma"})
    assert system_of(last(upstream)) == "You SUMMARIZE in one line."
    assert last(upstream)["temperature"] == 0.1
    follow = daemon.call("chat/send", {"message": "more?", "conversation_id": r["conversation_id"]})
    assert follow["role"] == "summarize" and last(upstream)["temperature"] == 0.1
    r = daemon.call("summarize/text", {"text": "alpha beta gamma", "role": "brief"})
    assert system_of(last(upstream)) == "You SUMMARIZE in three words."
    assert r["model"] == "fake-brief" and r["role"] == "brief"


def test_bad_role_is_config_error_with_line(make_daemon: Any, upstream: Upstream) -> None:
    """A role naming an unknown model is a config error naming the key and line; the daemon
    serves on, and a reload to a bad role keeps the last good roles."""
    good = fake_provider_config(upstream, extra=POET)
    lines = good.splitlines()
    bad = good.replace('model = "fake-poet"', 'model = "no-such-model"')
    d = make_daemon(bad)
    status = d.call("daemon/status")
    line = 1 + next(i for i, t in enumerate(lines) if t.startswith('model = "fake-poet"'))
    assert status["config_ok"] is False
    assert f"line {line}: roles.poet.model: unknown model 'no-such-model'" in status["config_error"]
    edit_config(d, good, lambda: "poet" in roles(d))
    edit_config(d, bad, lambda: d.call("daemon/status")["config_ok"] is False)
    assert roles(d)["poet"]["model"] == "fake-poet"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            'system = "s"\nprovider = "nobody"',
            "line 3: roles.r.provider: no provider named 'nobody'",
        ),
        ('system = "s"\nmodel = "fake-x"', "line 3: roles.r.model: unknown model 'fake-x'"),
        ('system = "s"\ntemprature = 1', "line 3: roles.r.temprature: Extra inputs"),
        ('system = "s"\ntemperature = "hot"', "line 3: roles.r.temperature: Input should be"),
        ('description = "no prompt"', "line 1: roles.r.system: a new role needs a system prompt"),
        ('system = "s"\nprovider = "openai"\nmodel = "grok-2"', "line 4: roles.r.model: unknown"),
    ],
)
def test_role_config_errors(table: str, problem: str) -> None:
    """Unknown keys, wrong types, a missing prompt, unknown providers and models are errors
    that name the key and its line."""
    with pytest.raises(config.ConfigError) as e:
        settings.parse(f"[roles.r]\n{table}\n\n", "c.toml")
    assert f"c.toml:{problem}" in str(e.value)


def test_role_config_accepts_routable_models() -> None:
    """A model that a provider's patterns, a local server or the price table know is accepted,
    and a role named like a built-in needs no prompt of its own."""
    cfg = settings.parse(
        "[roles.a]\nsystem = 's'\nmodel = 'gpt-4.1-mini'\n"
        "[roles.b]\nsystem = 's'\nprovider = 'ollama'\nmodel = 'llama3'\n"
        "[roles.c]\nsystem = 's'\nmodel = 'mine'\n[local.mine]\nmodel = '/m.gguf'\n"
        "[roles.summarize]\nmodel = 'gemini-2.5-flash'\n"
    )
    assert set(cfg.roles) == {"a", "b", "c", "summarize"}


def test_summarize_role_on_long_text(make_daemon: Any, upstream: Upstream) -> None:
    """For a text that needs map and reduce, the summarize role's prompt (with a note that
    parts are being combined) leads the last request, and its temperature reaches every one."""
    extra = '[roles.summarize]\nsystem = "You SUMMARIZE as bullets{about}."\ntemperature = 0.4\n'
    d = make_daemon(fake_provider_config(upstream, extra=extra))
    text = "\n\n".join(f"Paragraph {i} " + "and more words " * 30 for i in range(30))
    r = d.call("summarize/text", {"text": text, "title": "Notes", "model": "fake-small"})
    assert r["chunks"] > 1
    bodies = [q["body"] for q in upstream.requests]
    assert system_of(bodies[-1]) == f'You SUMMARIZE as bullets titled "Notes".\n\n{COMBINE_NOTE}'
    assert all((system_of(b) or "").startswith("You SUMMARIZE one part") for b in bodies[:-1][:2])
    assert {b["temperature"] for b in bodies} == {0.4}


def test_bad_vars_are_invalid_params(daemon: Daemon, upstream: Upstream) -> None:
    """A placeholder name that is not an identifier is -32602, and nothing is sent."""
    with pytest.raises(RpcError) as e:
        daemon.call("chat/send", {"message": "hi", "role": "explain", "vars": {"a b": "x"}})
    assert e.value.code == -32602
    assert upstream.requests == []
