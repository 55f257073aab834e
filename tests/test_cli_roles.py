"""assistantctl and roles: `chat -r NAME` sends the role, `roles` lists them, and the
completions offer their names."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import fake_provider_config
from tests.test_cli import ctl
from tests.test_packaging import bash_complete
from tests.upstream import Upstream

ROLE = """
[roles.pirate]
description = "Talks like a pirate"
system = "You are a PIRATE."
model = "fake-small"
temperature = 0.25
"""


def test_chat_with_a_role_sends_its_prompt_model_and_temperature(
    make_daemon: Any, upstream: Upstream
) -> None:
    """`assistantctl chat -r pirate` gets the role's system prompt, model and temperature to
    the provider; an explicit -t beats the role's."""
    d = make_daemon(fake_provider_config(upstream, extra=ROLE))
    out = ctl(d, "chat", "-r", "pirate", "ahoy", input="")
    assert out.returncode == 0, out.stderr
    body = upstream.requests[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "You are a PIRATE."}
    assert body["model"] == "fake-small" and body["temperature"] == 0.25
    out = ctl(d, "chat", "-r", "pirate", "-t", "0.9", "again", input="")
    assert out.returncode == 0 and upstream.requests[-1]["body"]["temperature"] == 0.9


def test_roles_lists_builtin_and_config_roles(make_daemon: Any, upstream: Upstream) -> None:
    """`assistantctl roles` shows each role with its source and description; --json the
    daemon's list."""
    d = make_daemon(fake_provider_config(upstream, extra=ROLE))
    out = ctl(d, "roles")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert "config" in rows["pirate"] and "Talks like a pirate" in rows["pirate"]
    assert "builtin" in rows["shell-command"]
    listed = json.loads(ctl(d, "roles", "--json").stdout)["roles"]
    assert {"name": "pirate", "source": "config"}.items() <= next(
        r for r in listed if r["name"] == "pirate"
    ).items()


def test_role_names_complete(make_daemon: Any, upstream: Upstream) -> None:
    """Bash completes `chat -r` with the daemon's role names, and offers `roles` and
    `doctor` as subcommands."""
    make_daemon(fake_provider_config(upstream, extra=ROLE))
    assert {"pirate", "shell-command"} <= set(bash_complete("assistantctl chat -r "))
    assert {"roles", "doctor"} <= set(bash_complete("assistantctl "))
