"""Local models against the real llama.cpp ``llama-server`` and the real gemma-3-270m model:
a managed server started on demand, streaming, logprobs, usage, trimming to its real
window, crash restart, idle stop, shutdown without orphans, probing of unmanaged
servers, and the no-key default. One daemon and server are shared where that is safe.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd import llama, prompt
from assistantd.client import DaemonUnavailable, RpcError
from assistantd.llama import free_port
from assistantd.prompt import TEMPLATE_TOKENS
from tests import llama_env
from tests.conftest import ROOT, Daemon
from tests.rawsock import Raw, req, until
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


def server_json(e: dict[str, Any], path: str, body: Any = None) -> Any:
    """A managed server's answer to ``path`` (POST ``body`` if given), with its API key."""
    request = urllib.request.Request(
        e["base_url"].removesuffix("/v1") + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {llama_env.api_key(e['pid'])}"},
    )
    with urllib.request.urlopen(request, timeout=60) as f:
        return json.load(f)


def send(d: Daemon, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    deltas: list[dict[str, Any]] = []
    with d.client() as c:
        r = c.call(
            "chat/send", params, on_notify=lambda m, p: m == "chat/delta" and deltas.append(p)
        )
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
    props = server_json(e, "/props")
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


def test_an_answer_after_the_server_closed_the_idle_connection(shared: Daemon) -> None:
    """The daemon keeps idle connections for a minute; llama-server closes its own after
    5 s. A message sent after that pause goes on a new connection and is answered, with
    no retry and no error."""
    r, _ = send(shared, message="Hi", model="gemma-3-270m", max_tokens=3, temperature=0)
    assert r["usage"]["completion_tokens"] > 0
    time.sleep(7)
    before = len(shared.stderr())  # the shared daemon's log holds earlier tests' lines
    r, deltas = send(shared, message="Hi again", model="gemma-3-270m", max_tokens=3)
    assert r["usage"]["completion_tokens"] > 0 and r["text"] == "".join(d["text"] for d in deltas)
    assert "retry" not in shared.stderr()[before:]


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
    # The state changes once the daemon has seen the exit, a moment after the pid is gone.
    until(lambda: entry(d, "gemma")["state"] == "stopped", what="the stopped state")
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


def test_a_key_in_the_keyring_turns_the_no_key_default_off_for_the_first_question(
    secret_service: None, make_daemon: Any, upstream: Upstream
) -> None:
    """With an OpenAI key in the keyring (none in the environment) and no default model,
    the first question a cold daemon is asked, sent the moment its socket answers, goes to
    OpenAI, not to the bundled model (it did until the keyring had been read)."""
    import keyring

    key = "sk-first-0123456789abcdef"
    keyring.set_password("assistantd", "openai", key)
    try:
        config = f'[providers.openai]\nbase_url = "{upstream.base_url}"\n'
        d: Daemon = make_daemon(config, wait=False)
        deadline = time.monotonic() + 20
        while True:  # the first request this daemon is sent is the question
            try:
                r = d.call("chat/send", {"message": "first"})
                break
            except DaemonUnavailable:
                assert time.monotonic() < deadline, d.stderr()
                time.sleep(0.005)
        assert (r["model"], r["provider"], r["text"]) == ("gpt-4.1", "openai", "You said: first")
        assert upstream.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
        assert d.call("daemon/status")["default_model"] == "gpt-4.1"
    finally:
        keyring.delete_password("assistantd", "openai")


def test_ignored_logprobs_give_a_warning(daemon: Daemon, upstream: Upstream) -> None:
    """A server that ignores logprobs (as LM Studio does) gives an answer with logprobs
    null and a warning, not an error."""
    r, _ = send(daemon, message="hello", model="nologprobs-echo", top_logprobs=3)
    assert r["text"] == "You said: hello" and r["logprobs"] is None
    assert any("ignored logprobs" in w for w in r["warnings"])


# -- prompt format, template tokens, the server's key and environment (issues 11, 12) ------

SECRETS = {
    "OPENAI_API_KEY": "sk-envtest-0000000000000000000000",
    "XAI_API_KEY": "xai-envtest-11111111111111111111",
    "ASSISTANTD_TEST_SECRET": "hunter2-envtest",
}
LEAKS = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|<(?:start|end)_of_turn>|<eos>|<bos>")

IMPOSTOR = """\
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Any(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Any).serve_forever()
"""


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with no config that serves the bundled model, provider keys and another
    secret in its environment."""
    with pytest.MonkeyPatch.context() as mp:
        _xdg(mp, tmp_path_factory.mktemp("bundled"))
        d = Daemon("", env={**NO_KEYRING, **SECRETS})
    yield d
    d.stop()


def test_first_request_to_a_stopped_server_says_it_is_starting(bundled: Daemon) -> None:
    """A chat/send that has to start a managed server sends one chat/progress
    {stage: "starting_local", name} before its answer; one to a ready server sends none."""
    bundled.call("local/stop", {"name": "gemma"})
    notes: list[tuple[str, dict[str, Any]]] = []
    with bundled.client() as c:
        params = {"message": "Hi", "model": "gemma-3-270m", "max_tokens": 4}
        r = c.call("chat/send", params, on_notify=lambda m, p: notes.append((m, p)))
        progress = [p for m, p in notes if m == "chat/progress"]
        assert len(progress) == 1 and notes[0][0] == "chat/progress"
        assert progress[0]["stage"] == "starting_local" and progress[0]["name"] == "gemma"
        assert progress[0]["request_id"] is not None
        assert r["provider"] == "gemma"
        notes.clear()
        c.call("chat/send", params, on_notify=lambda m, p: notes.append((m, p)))
        assert not [m for m, _ in notes if m == "chat/progress"]


def test_bundled_model_answers_ten_questions_in_plain_text(bundled: Daemon) -> None:
    """The bundled base model, asked ten everyday questions through the daemon, answers
    each with readable text and never with a template token."""
    answers = []
    for q in llama_env.QUESTIONS:
        r, deltas = send(bundled, message=q, model="gemma-3-270m", temperature=0)
        answers.append((q, r["text"]))
        print(f"\nQ: {q}\nA: {r['text']}")
        assert r["text"] == "".join(d["text"] for d in deltas)
        for token in TEMPLATE_TOKENS:
            assert token not in r["text"], (q, r["text"])
        assert not LEAKS.search(r["text"]), (q, r["text"])
        assert r["text"].strip() and r["text"] == r["text"].strip()
        words = re.findall(r"[A-Za-z0-9]+", r["text"])
        printable = sum(c.isprintable() or c in "\n\t" for c in r["text"])
        assert words and printable == len(r["text"]), (q, r["text"])
    conv = bundled.call("conversations/get", {"id": r["conversation_id"]})
    assert conv["messages"][-1]["content"] == answers[-1][1]  # the stored text is the shown one


def test_bundled_model_uses_the_transcript_template(bundled: Daemon) -> None:
    """The bundled GGUF has no chat template, and its server runs the daemon's
    Question/Answer transcript template (not llama.cpp's ChatML fallback)."""
    bundled.call("local/start", {"name": "gemma"})  # assembles the model on first use
    info = prompt.read_gguf(next(Path(bundled.env["XDG_CACHE_HOME"]).rglob("*.gguf")))
    assert info.architecture == "gemma3" and info.chat_template is None
    assert {"<end_of_turn>", "<start_of_turn>", "<eos>"} <= info.special_tokens
    e = entry(bundled, "gemma")
    props = server_json(e, "/props")
    assert props["chat_template"].strip() == prompt.TRANSCRIPT_JINJA.strip()


def test_server_environment_has_no_secrets(bundled: Daemon) -> None:
    """llama-server gets a scrubbed environment: none of the daemon's provider keys or other
    variables, only what it needs and its own API key."""
    bundled.call("local/start", {"name": "gemma"})
    pid = entry(bundled, "gemma")["pid"]
    env = llama_env.environ(pid)
    daemon_env = llama_env.environ(bundled.proc.pid)
    assert all(daemon_env[k] == v for k, v in SECRETS.items())  # the daemon had them
    for name, value in SECRETS.items():
        assert name not in env
        assert not any(value in v for v in env.values())
    allowed = {*llama.ENV_KEEP, "LD_LIBRARY_PATH", llama.API_KEY_ENV}
    assert {k for k in env if not k.startswith("LC_")} <= allowed
    assert env[llama.API_KEY_ENV] and "PATH" in env


def test_server_refuses_requests_without_its_key(bundled: Daemon) -> None:
    """A request to the managed server's port without its random key gets 401; with the
    key it is served. The key is on no command line and in no log."""
    bundled.call("local/start", {"name": "gemma"})
    e = entry(bundled, "gemma")
    root = e["base_url"].removesuffix("/v1")
    key = llama_env.api_key(e["pid"])
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    for path, data in (("/v1/models", None), ("/v1/chat/completions", body.encode())):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(root + path, data=data), timeout=10)
        refused.value.close()  # the error holds the response and its socket
        assert refused.value.code == 401
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(
        root + "/v1/chat/completions", data=body.encode(), headers=auth
    )
    with urllib.request.urlopen(request, timeout=60) as f:
        assert f.status == 200
    assert key not in Path(f"/proc/{e['pid']}/cmdline").read_text(errors="replace")
    log = "\n".join(bundled.call("local/logs", {"name": "gemma", "lines": 10_000})["lines"])
    assert "assistantd starts:" in log and key not in log


def test_a_server_that_is_not_ours_is_refused(make_daemon: Any, gguf: Path, tmp_path: Path) -> None:
    """A 'server' that answers /health but also serves requests without the key is not the
    one the daemon started: the start fails with -32007 instead of using it; the config's
    chat_template and the model's architecture pick the prompt format on its command line."""
    fake = tmp_path / "impostor"
    fake.write_text(f"#!{sys.executable}\n{IMPOSTOR}")
    fake.chmod(0o755)
    tpl = tmp_path / "mine.jinja"
    tpl.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    config = "".join(
        f'[local.{name}]\ncommand = "{fake}"\nmodel = "{gguf}"\nstartup_timeout_s = 20\n{extra}\n'
        for name, extra in (
            ("auto", ""),
            ("chatml", 'chat_template = "chatml"'),
            ("file", f'chat_template = "{tpl}"'),
        )
    )
    d = make_daemon(config)
    for name, flags in (
        ("auto", "--no-jinja --chat-template gemma"),
        ("chatml", "--no-jinja --chat-template chatml"),
        ("file", f"--jinja --chat-template-file {tpl}"),
    ):
        with pytest.raises(RpcError) as e:
            d.call("local/start", {"name": name})
        assert e.value.code == -32007 and "not the one assistantd started" in e.value.message
        log = "\n".join(d.call("local/logs", {"name": name, "lines": 100})["lines"])
        assert flags in log, log


def test_template_tokens_are_removed_from_local_answers(
    make_daemon: Any, upstream: Upstream
) -> None:
    """A local server's answer loses the template tokens it carries, streamed and stored
    alike; a remote provider's answer is left as it came."""
    config = (
        f'[providers.lms]\nbase_url = "{upstream.base_url}"\nkind = "lmstudio"\n'
        "needs_key = false\nmodels = []\n"
        f'[providers.remote]\nbase_url = "{upstream.base_url}"\nneeds_key = false\n'
        'models = ["fake-*"]\n'
    )
    d = make_daemon(config)
    reply = "[[reply:Paris.<end_of_turn> <|im_end|>user <|im_start|>assistant Lyon</s>]]"
    r, deltas = send(d, message=reply, provider="lms", model="fake-echo")
    assert r["text"] == "Paris. user assistant Lyon"
    assert "".join(x["text"] for x in deltas) == r["text"]
    stored = d.call("conversations/get", {"id": r["conversation_id"]})["messages"][-1]
    assert stored["content"] == r["text"]
    r, _ = send(d, message=reply, provider="remote", model="fake-echo", stream=False)
    assert r["text"] == "Paris.<end_of_turn> <|im_end|>user <|im_start|>assistant Lyon</s>"


def test_token_filter_joins_tokens_split_across_deltas() -> None:
    """The filter removes a template token that arrives one character per delta, holds back
    only what could begin one, and gives back a held '<' that began none."""
    f = prompt.TokenFilter(frozenset(TEMPLATE_TOKENS))
    text = "a<x <|im_end|>c<end_of_turn>d<"
    shown = [f.feed(ch) for ch in text] + [f.flush()]
    assert "".join(shown) == "a<x cd<"
    assert shown[1] == "" and shown[2] == "<x"  # "<" waited until "x" ruled a token out
    t = prompt.TokenFilter(frozenset(TEMPLATE_TOKENS), trim=True)
    assert [t.feed(" Paris."), t.feed("\n"), t.feed(" It"), t.feed("\n")] == [
        "Paris.",
        "",
        "\n It",
        "",
    ]
    assert t.flush() == ""


def test_transcript_carries_the_conversation(bundled: Daemon) -> None:
    """In the transcript format a follow-up is answered after the earlier turns, rendered
    as Question/Answer pairs below the system prompt."""
    r1, _ = send(
        bundled,
        message="What is the capital of France?",
        model="gemma-3-270m",
        system="Answer in one sentence.",
        temperature=0,
    )
    r2, _ = send(bundled, message="And of Italy?", conversation_id=r1["conversation_id"])
    assert r2["text"].strip() and not LEAKS.search(r2["text"])
    e = entry(bundled, "gemma")
    messages = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": r1["text"]},
        {"role": "user", "content": "And of Italy?"},
    ]
    rendered = server_json(e, "/apply-template", {"messages": messages})["prompt"]
    assert rendered.startswith("Answer in one sentence.\n\nQuestion: ")
    assert rendered.endswith(
        f"\n\nQuestion: What is the capital of France?\nAnswer: {r1['text']}"
        "\n\nQuestion: And of Italy?\nAnswer:"
    )
