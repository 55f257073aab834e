"""Secrets: a daemon logging at DEBUG, with keys from its environment and from the real
OS keyring, runs chats that succeed, chats whose key is refused (401) and chats that
fail in other ways; afterwards no file under the data, state, cache, config or runtime
dirs (the database and its WAL, the log, the daemon's stderr) and no reply holds a key."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import Daemon
from tests.upstream import Upstream


def new_key(kind: str) -> str:
    return f"sk-test-{kind}-{secrets.token_hex(16)}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink():
                    yield path


def holders(keys: list[str], roots: list[Path]) -> tuple[list[str], list[str]]:
    """(every file scanned, each "file: key" where a key's bytes occur)."""
    scanned, found = [], []
    for path in files_under(*roots):
        scanned.append(str(path))
        data = path.read_bytes()
        found += [f"{path}: {k}" for k in keys if k.encode() in data]
    return scanned, found


class Recorder:
    """Every reply, error and notification the daemon sends our way."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.seen: list[Any] = []

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.d.client() as c:
            try:
                result = c.call(method, params, on_notify=lambda m, p: self.seen.append([m, p]))
            except RpcError as e:
                self.seen.append([e.code, e.message, e.data])
                return e
        self.seen.append(result)
        return result


@pytest.fixture
def key_upstreams() -> Iterator[tuple[str, str, Upstream, Upstream]]:
    """Two upstreams that accept one key each: one for the env key, one for the keyring's."""
    env_key, kr_key = new_key("env"), new_key("kr")
    with Upstream(api_key=env_key) as env_up, Upstream(api_key=kr_key) as kr_up:
        yield env_key, kr_key, env_up, kr_up


@pytest.mark.parametrize("streaming", ["sdk", "http"])
def test_no_key_in_any_file_log_or_reply(secret_service: None, make_daemon: Any,
                                         isolated_dirs: Path,
                                         key_upstreams: tuple[str, str, Upstream, Upstream],
                                         streaming: str) -> None:  # fmt: skip
    """Keys from the env and the keyring, used, refused (401) and failing, never reach a
    file in the daemon's folders, its log (at DEBUG), its stderr or a reply, whether
    streamed answers go through the SDK or in plain HTTP."""
    env_key, kr_key, env_up, kr_up = key_upstreams
    bad_env_key, bad_kr_key = new_key("badenv"), new_key("badkr")
    suffix = secrets.token_hex(3)
    krp, badkr = f"krp{suffix}", f"badkr{suffix}"
    config = f"""
log_level = "DEBUG"
streaming = "{streaming}"
default_model = "envp-echo"
[providers.envp]
base_url = "{env_up.base_url}"
models = ["envp-*"]
key_env = "ENVP_API_KEY"
needs_key = true
[providers.{krp}]
base_url = "{kr_up.base_url}"
models = ["krp-*"]
needs_key = true
[providers.{badkr}]
base_url = "{env_up.base_url}"
models = ["badkr-*"]
needs_key = true
[providers.badenv]
base_url = "{kr_up.base_url}"
models = ["badenv-*"]
key_env = "BADENV_API_KEY"
needs_key = true
[providers.down]
base_url = "http://127.0.0.1:{closed_port()}/v1"
models = ["down-*"]
key_env = "ENVP_API_KEY"
needs_key = true
"""
    d: Daemon = make_daemon(config, env={"ENVP_API_KEY": env_key, "BADENV_API_KEY": bad_env_key})
    rec = Recorder(d)
    odd_keys = [new_key("spaced") + " x", new_key("long") + "x" * 5000]
    keys = [env_key, kr_key, bad_env_key, bad_kr_key, *odd_keys]
    try:
        assert rec.call("keys/set", {"provider": krp, "key": kr_key}) == {
            "provider": krp, "source": "keyring"}  # fmt: skip
        assert rec.call("keys/set", {"provider": badkr, "key": bad_kr_key})["source"] == "keyring"
        for odd in odd_keys:  # refused keys are not echoed either
            assert rec.call("keys/set", {"provider": krp, "key": odd}).code == -32602

        ok = rec.call("chat/send", {"message": "[[words:5]] env", "top_logprobs": 2})
        assert ok["text"] == "w1 w2 w3 w4 w5"
        assert rec.call("chat/send", {"message": "kr", "model": "krp-echo", "stream": False})[
            "text"] == "You said: kr"  # fmt: skip
        for model in ("badkr-echo", "badenv-echo"):
            err = rec.call("chat/send", {"message": "refused?", "model": model})
            assert (err.code, err.data["status"]) == (-32002, 401)
            assert "refused the API key" in err.message
        assert rec.call("chat/send", {"message": "x", "model": "down-echo"}).code == -32003
        assert rec.call("chat/send", {"message": "[[error:500]] x"}).code == -32002
        assert rec.call("chat/send", {"message": "[[words:9]] [[cut:2]]", "model": "krp-x"}
                        ).data["partial_text"] == "w1 w2"  # fmt: skip
        assert rec.call("chat/send", {"message": "x", "api_key": env_key}).code == -32602
        listed = {k["provider"]: k for k in rec.call("keys/list")["keys"]}
        assert (listed["envp"]["source"], listed["envp"]["hint"]) == ("env", env_key[-4:])
        assert (listed[krp]["source"], listed[krp]["hint"]) == ("keyring", kr_key[-4:])
        rec.call("providers/list")
        for provider in ("envp", krp, badkr, "badenv", "down"):  # each asks its upstream
            models = rec.call("models/list", {"provider": provider})
            assert bool(models["errors"]) == (provider in (badkr, "badenv", "down"))
        rec.call("daemon/reload")
        for conv in rec.call("conversations/list")["conversations"]:
            rec.call("conversations/export", {"id": conv["id"], "format": "json"})

        dirs = [isolated_dirs, Path(os.environ["XDG_RUNTIME_DIR"])]
        scanned, found = holders(keys, dirs)  # while running: the WAL holds the recent writes
        assert not found, found
        assert any(p.endswith("-wal") for p in scanned), scanned
    finally:
        for provider in (krp, badkr):
            rec.call("keys/delete", {"provider": provider})
        d.stop()

    scanned, found = holders(keys, dirs)
    assert not found, found
    names = {Path(p).name for p in scanned}
    assert {"conversations.sqlite3", "assistantd.log", "config.toml"} <= names
    log = next(Path(p) for p in scanned if p.endswith("assistantd.log")).read_text()
    assert "down: connection failed; retry" in log  # the failures were logged
    assert d.stderr_path.read_text().strip()
    replies = repr(rec.seen)
    assert not [k for k in keys if k in replies]
