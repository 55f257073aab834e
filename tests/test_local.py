"""Local models against the real llama.cpp ``llama-server`` and the real gemma-3-270m model:
a managed server started on demand, streaming, logprobs, usage, trimming to its real
window, crash restart, idle stop, shutdown without orphans, probing of unmanaged
servers, and the no-key default. One daemon and server are shared where that is safe.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from assistantd.llama import free_port
from tests import llama_env
from tests.conftest import ROOT, Daemon
from tests.rawsock import Raw, req
from tests.upstream import Upstream

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank. "
NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring"}


@pytest.fixture(scope="session")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model, assembled once for the session."""
    return llama_env.model(tmp_path_factory.mktemp("model"))


def _xdg(mp: pytest.MonkeyPatch, base: Path) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="adl-", dir="/tmp"))
    runtime.chmod(0o700)
    mp.setenv("XDG_RUNTIME_DIR", str(runtime))
    for var, sub in (
        ("XDG_DATA_HOME", "data"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("XDG_STATE_HOME", "state"),
    ):
        mp.setenv(var, str(base / sub))
    for var in ("ASSISTANTD_SOCKET", "ASSISTANTD_CONFIG", "OPENAI_API_KEY"):
        mp.delenv(var, raising=False)


@pytest.fixture(scope="module")
def user_server(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A llama-server run by 'the user', outside the daemon."""
    s = llama_env.UserServer(gguf, tmp_path_factory.mktemp("user-llama"))
    s.wait_ready()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared(
    gguf: Path, user_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """One daemon with a managed ``gemma``, a ``broken`` one (no model file), the user's
    llama-server as ``llama`` and an LM Studio where nothing listens."""
    config = (
        llama_env.local_config("gemma", gguf)
        + llama_env.local_config("broken", gguf.parent / "missing.gguf").replace(
            'alias = "gemma-3-270m"', 'alias = "broken-model"'
        )
        + f'[providers.llama]\nbase_url = "{user_server.base_url}"\n'
        + f'[providers.lmstudio]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        _xdg(mp, tmp_path_factory.mktemp("shared"))
        d = Daemon(config)
    yield d
    d.stop()


def entry(d: Daemon, name: str) -> dict[str, Any]:
    servers = d.call("local/list")["servers"]
    return next(s for s in servers if s["name"] == name)


def send(d: Daemon, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    deltas: list[dict[str, Any]] = []
    with d.client() as c:
        r = c.call("chat/send", params, on_notify=lambda m, p: deltas.append(p))
    return r, deltas


def test_first_send_starts_the_server_and_streams(shared: Daemon) -> None:
    """The first chat/send to a stopped [local] server starts it and streams deltas whose
    real top-3 logprobs (greedy: the chosen token is the top one) and usage come through."""
    assert entry(shared, "gemma")["state"] == "stopped"
    t0 = time.monotonic()
    r, deltas = send(
        shared, message="Hello", model="gemma-3-270m", max_tokens=12, temperature=0, top_logprobs=3
    )
    print(f"\ncold start to answer: {time.monotonic() - t0:.2f} s")
    assert r["provider"] == "gemma" and r["model"] == "gemma-3-270m"
    assert len(deltas) > 1 and r["text"] == "".join(d["text"] for d in deltas)
    lps = r["logprobs"]
    assert lps and lps == [lp for d in deltas for lp in d.get("logprobs") or []]
    for lp in lps:
        top = lp["top_logprobs"]
        assert len(top) == 3 and lp["token"] == top[0]["token"]
        assert lp["logprob"] == top[0]["logprob"] <= 0
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-6
    assert len({round(lp["logprob"], 6) for lp in lps}) > 3  # not a fake's fixed pattern
    u = r["usage"]
    assert u["prompt_tokens"] > 0 and 0 < u["completion_tokens"] <= 12
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert r["warnings"] == []
    e = entry(shared, "gemma")
    assert e["state"] == "ready" and e["managed"] and e["base_url"].startswith("http://127.0.0.1:")


def test_context_size_comes_from_props(shared: Daemon) -> None:
    """The daemon reads the server's real context size from /props (4096, as -c asked)."""
    send(shared, message="Hi", model="gemma-3-270m", max_tokens=1)
    e = entry(shared, "gemma")
    with urllib.request.urlopen(e["base_url"].removesuffix("/v1") + "/props", timeout=5) as f:
        props = json.load(f)
    assert e["n_ctx"] == props["default_generation_settings"]["n_ctx"] == 4096


def test_long_conversation_is_trimmed_to_the_real_window(shared: Daemon) -> None:
    """A conversation longer than the server's 4096-token window keeps working: the oldest
    turns are left out, and the server never sees a prompt it would refuse."""
    para = SENTENCE * 160
    r1, _ = send(shared, message=para + "First.", model="gemma-3-270m", max_tokens=4)
    r2, _ = send(
        shared, message=para + "Second.", conversation_id=r1["conversation_id"], max_tokens=4
    )
    assert r1["usage"]["prompt_tokens"] + r2["usage"]["prompt_tokens"] > 4096
    assert r2["trimmed"] >= 2 and r2["finish_reason"] in ("length", "stop")
    assert r2["usage"]["prompt_tokens"] < 4096
    conv = shared.call("conversations/get", {"id": r1["conversation_id"]})
    assert len(conv["messages"]) == 4  # trimming leaves the stored history whole


def test_crash_mid_answer_is_restarted(shared: Daemon) -> None:
    """SIGKILL of llama-server mid-answer fails that answer (-32003, partial text kept);
    the server is restarted and the next request works."""
    send(shared, message="Hi", model="gemma-3-270m", max_tokens=1)
    pid = entry(shared, "gemma")["pid"]
    killed = threading.Event()

    def on_delta(method: str, params: dict[str, Any]) -> None:
        if method == "chat/delta" and not killed.is_set():
            os.kill(pid, signal.SIGKILL)
            killed.set()

    with shared.client() as c, pytest.raises(RpcError) as broken:
        c.call(
            "chat/send",
            {"message": "Tell me a long story.", "model": "gemma-3-270m", "max_tokens": 400},
            on_notify=on_delta,
        )
    assert killed.is_set() and broken.value.code == -32003
    assert "partial_text" in broken.value.data
    assert llama_env.wait_gone(pid)
    r, _ = send(shared, message="Hello again", model="gemma-3-270m", max_tokens=4)
    assert r["usage"]["completion_tokens"] > 0
    e = entry(shared, "gemma")
    assert e["state"] == "ready" and e["pid"] != pid
    log = "\n".join(shared.call("local/logs", {"name": "gemma", "lines": 10_000})["lines"])
    assert log.count("assistantd starts:") >= 2


def test_start_with_a_missing_model_gives_the_log_tail(shared: Daemon) -> None:
    """local/start, and chat/send, to a server whose model file is missing fail with -32007
    and the end of llama-server's own log."""
    with pytest.raises(RpcError) as e:
        shared.call("local/start", {"name": "broken"})
    assert e.value.code == -32007 and e.value.data["name"] == "broken"
    assert "missing.gguf" in e.value.message
    assert "missing.gguf" in e.value.data["log_tail"] and "llama" in e.value.data["log_tail"]
    assert entry(shared, "broken")["state"] == "failed"
    with pytest.raises(RpcError) as e:
        shared.call("chat/send", {"message": "hi", "model": "broken-model"})
    assert e.value.code == -32007 and "missing.gguf" in e.value.data["log_tail"]


def test_lmstudio_not_running(shared: Daemon) -> None:
    """Chat with LM Studio when it is not running gives -32003 'LM Studio is not running
    on HOST:PORT', and local/start and local/list say the same."""
    lm = entry(shared, "lmstudio")
    where = lm["base_url"].split("//")[1].removesuffix("/v1")
    assert lm["state"] == "stopped" and not lm["managed"]
    assert lm["error"] == f"LM Studio is not running on {where}"
    with pytest.raises(RpcError) as e:
        shared.call("chat/send", {"message": "hi", "provider": "lmstudio", "model": "m"})
    assert e.value.code == -32003 and e.value.message == f"LM Studio is not running on {where}"
    with pytest.raises(RpcError) as e:
        shared.call("local/start", {"name": "lmstudio"})
    assert e.value.code == -32003 and "LM Studio is not running" in e.value.message


def test_user_run_llama_server_is_probed(shared: Daemon, user_server: Any) -> None:
    """A llama-server the user runs is listed as ready with its model and real n_ctx, and
    chat reaches it; local/stop refuses to touch it."""
    e = entry(shared, "llama")
    assert e == {**e, "state": "ready", "managed": False, "model": "gemma-3-270m", "n_ctx": 4096}
    r, _ = send(shared, message="Hi", provider="llama", model="gemma-3-270m", max_tokens=3)
    assert r["provider"] == "llama" and r["usage"]["completion_tokens"] > 0
    with pytest.raises(RpcError) as err:
        shared.call("local/stop", {"name": "llama"})
    assert err.value.code == -32602
    assert user_server.proc.poll() is None


def test_cli_local_commands(shared: Daemon) -> None:
    """assistantctl local list|logs|stop|start drive the managed server, and a subscribed
    client hears each state change as a local/state event."""

    def ctl(*args: str) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "assistantd.cli",
                "--socket",
                str(shared.socket),
                "--no-autostart",
                "local",
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    shared.call("local/start", {"name": "gemma"})
    pid = entry(shared, "gemma")["pid"]
    watcher = Raw(shared.socket)
    watcher.send(req(1, "daemon/subscribe", {"events": ["local/state"]}))
    watcher.response(1)
    listing = ctl("list")
    assert any(
        line.split()[:4] == ["gemma", "llama-server", "managed", "ready"]
        for line in listing.splitlines()
    )
    assert "LM Studio is not running" in listing
    assert "llama-server" in ctl("logs", "gemma", "-n", "200")
    assert ctl("stop", "gemma").strip() == "gemma: stopped"
    assert llama_env.wait_gone(pid, 10)
    assert ctl("start", "gemma").startswith("gemma: ready at http://127.0.0.1:")
    events = []
    while len(events) < 3:
        msg = watcher.line()
        assert isinstance(msg, dict)
        if msg.get("method") == "local/state" and msg["params"]["name"] == "gemma":
            events.append(msg["params"]["state"])
    assert events == ["stopped", "starting", "ready"]


def test_idle_server_is_stopped(make_daemon: Any, gguf: Path) -> None:
    """A managed server is stopped after its idle timeout, and started again on demand."""
    d = make_daemon(llama_env.local_config("gemma", gguf, idle_timeout_s=2))
    pid = d.call("local/start", {"name": "gemma"})["pid"]
    assert llama_env.pid_alive(pid)
    assert llama_env.wait_gone(pid, 10)
    assert entry(d, "gemma")["state"] == "stopped"
    assert d.call("local/start", {"name": "gemma"})["state"] == "ready"


def test_daemon_sigterm_stops_the_server(make_daemon: Any, gguf: Path) -> None:
    """SIGTERM to the daemon stops its llama-server before the daemon exits."""
    d = make_daemon(llama_env.local_config("gemma", gguf))
    pid = d.call("local/start", {"name": "gemma"})["pid"]
    assert d.stop(signal.SIGTERM) == 0
    assert not llama_env.pid_alive(pid)


def test_daemon_sigkill_leaves_no_orphan(make_daemon: Any, gguf: Path) -> None:
    """SIGKILL to the daemon leaves no llama-server behind (the kernel's parent-death
    signal stops it)."""
    d = make_daemon(llama_env.local_config("gemma", gguf))
    pid = d.call("local/start", {"name": "gemma"})["pid"]
    d.stop(signal.SIGKILL)
    assert llama_env.wait_gone(pid, 5), f"llama-server {pid} outlived the daemon"


def test_no_key_default_is_the_bundled_model(make_daemon: Any) -> None:
    """With no config and no key, the default model is the bundled gemma-3-270m, and
    `assistantctl chat "Hello"` streams an answer from it."""
    d = make_daemon("", env=NO_KEYRING)
    status = d.call("daemon/status")
    assert status["default_model"] == "gemma-3-270m" and "gemma" in status["providers"]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantd.cli",
            "--no-autostart",
            "chat",
            "--max-tokens",
            "8",
            "-v",
            "Hello",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        env=d.env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "[gemma-3-270m via gemma:" in out.stderr
    providers = d.call("providers/list")["providers"]
    gemma = next(p for p in providers if p["name"] == "gemma")
    assert gemma["managed"] and gemma["state"] == "ready" and gemma["models"] == ["gemma-3-270m"]


def test_a_key_turns_the_no_key_default_off(make_daemon: Any) -> None:
    """With an OpenAI key in the environment the default model stays the remote one."""
    d = make_daemon("", env={**NO_KEYRING, "OPENAI_API_KEY": "sk-test-0000000000000000"})
    assert d.call("daemon/status")["default_model"] == "gpt-4.1"


def test_ignored_logprobs_give_a_warning(daemon: Daemon, upstream: Upstream) -> None:
    """A server that ignores logprobs (as LM Studio does) gives an answer with logprobs
    null and a warning, not an error."""
    r, _ = send(daemon, message="hello", model="nologprobs-echo", top_logprobs=3)
    assert r["text"] == "You said: hello" and r["logprobs"] is None
    assert any("ignored logprobs" in w for w in r["warnings"])
