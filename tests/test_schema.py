"""Structured output: chat/send's `schema` is asked of the provider as `response_format`
json_schema, the answer is validated and returned parsed in `json`; a mismatch is -32002
`schema_mismatch` with the text kept. Against the loopback upstream and the real bundled
model (llama-server's grammar-constrained output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests import llama_env
from tests.conftest import ROOT, Daemon
from tests.upstream import Upstream

COLOR = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}


def send(d: Daemon, **params: Any) -> dict[str, Any]:
    with d.client() as c:
        result: dict[str, Any] = c.call("chat/send", params)
    return result


def test_schema_is_asked_and_the_answer_parsed(daemon: Daemon, upstream: Upstream) -> None:
    """The provider gets response_format json_schema; the result has the parsed JSON too."""
    r = send(daemon, message='pick [[reply:{"color": "red"}]]', schema=COLOR)
    assert r["json"] == {"color": "red"} and r["text"] == '{"color": "red"}'
    assert upstream.requests[0]["body"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": COLOR, "strict": True},
    }


def test_no_schema_no_response_format(daemon: Daemon, upstream: Upstream) -> None:
    """Without a schema nothing changes: no response_format is sent and `json` is null."""
    r = send(daemon, message='[[reply:{"color": "red"}]]')
    assert r["json"] is None and "response_format" not in upstream.requests[0]["body"]


def test_fenced_json_is_accepted(daemon: Daemon) -> None:
    """An answer wrapped in a Markdown code fence still parses (some providers add one)."""
    r = send(daemon, message='[[reply:```json\n{"color": "blue"}\n```]]', schema=COLOR)
    assert r["json"] == {"color": "blue"}


@pytest.mark.parametrize(
    "answer", ['{"colour": "red"}', '{"color": 7}', "red, I think", '{"color": "re']
)
def test_mismatch_is_an_error_with_the_text_kept(daemon: Daemon, answer: str) -> None:
    """A non-JSON or invalid answer is -32002 schema_mismatch; its text is in data and stored."""
    with pytest.raises(RpcError) as e:
        send(daemon, message=f"[[reply:{answer}]]", schema=COLOR)
    err = e.value
    assert err.code == -32002 and err.data["reason"] == "schema_mismatch", err.message
    assert err.data["text"] == answer
    conv = daemon.call("conversations/get", {"id": err.data["conversation_id"]})
    last = conv["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == answer
    assert last["id"] == err.data["message_id"]


def test_invalid_schema_is_refused_before_anything(daemon: Daemon, upstream: Upstream) -> None:
    """A schema that is not a JSON Schema is -32602 bad_schema; nothing is stored or sent."""
    with pytest.raises(RpcError) as e:
        send(daemon, message="hi", schema={"type": 12})
    assert e.value.code == -32602 and e.value.data["reason"] == "bad_schema"
    assert upstream.requests == [] and daemon.call("conversations/list")["total"] == 0


def run_cli(d: Daemon, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**d.env, "ASSISTANTD_SOCKET": str(d.socket)}
    return subprocess.run(
        [sys.executable, "-m", "assistantd.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_schema_prints_the_json_only(daemon: Daemon, tmp_path: Path) -> None:
    """`assistantctl chat --schema FILE|JSON` prints the parsed JSON on one line, nothing else."""
    answer = '{"color": "red",\n "shades": ["crimson", "scarlet"]}'
    f = tmp_path / "schema.json"
    f.write_text(json.dumps(COLOR))
    for spec in (str(f), json.dumps(COLOR)):
        p = run_cli(daemon, "chat", "--schema", spec, f"[[reply:{answer}]]")
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("\n") == 1 and json.loads(p.stdout) == json.loads(answer)
    p = run_cli(daemon, "chat", "--schema", json.dumps(COLOR), "[[reply:nope]]")
    assert p.returncode != 0 and p.stdout == "" and "schema" in p.stderr


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return llama_env.model(tmp_path_factory.mktemp("model"))


def test_real_bundled_model_returns_valid_json(make_daemon: Any, gguf: Path) -> None:
    """The bundled llama-server, asked for JSON under a schema, answers valid parsed JSON."""
    d: Daemon = make_daemon(llama_env.local_config("gemma", gguf))
    r = send(
        d,
        message="What color is grass?",
        model="gemma-3-270m",
        schema=COLOR,
        temperature=0,
        max_tokens=60,
    )
    assert r["provider"] == "gemma"
    assert isinstance(r["json"], dict) and isinstance(r["json"]["color"], str)
    assert json.loads(r["text"]) == r["json"]
    print(f"\nthe bundled model answered: {r['text']!r}")
    # The same through the CLI, as a user runs it: one line of JSON, ready for jq.
    p = run_cli(
        d, "chat", "-m", "gemma-3-270m", "-t", "0", "--max-tokens", "60",
        "--schema", json.dumps(COLOR), "What color is the sky?",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("\n") == 1
    assert isinstance(json.loads(p.stdout)["color"], str)
    print(f"assistantctl chat --schema printed: {p.stdout!r}")
