"""A fuzzer over the framing and the params: thousands of hostile inputs over real
sockets to a daemon, which must answer each with well-formed JSON-RPC 2.0 and live on.

Each example opens a connection, sends its bytes, shuts down its sending side (which
the contract reads as "no more requests": answer what is in flight, then close) and
reads every answer to the end. No example reaches the upstream: methods that would
call a provider are pointed at ``nokey``, which needs a key that does not exist, so
they fail before anything is stored.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistantd.daemon import Daemon as DaemonCore
from tests.conftest import Daemon, fake_provider_config
from tests.upstream import Upstream

# Methods that change the world outside the daemon's own data, or stop it.
EXCLUDED = {"daemon/shutdown", "keys/set", "keys/delete", "summarize/url"}
NOKEY = """
[providers.nokey]
base_url = "http://127.0.0.1:9/v1"
models = ["nokey-*"]
needs_key = true
key_env = "ASSISTANTD_FUZZ_NO_SUCH_KEY"
"""
SETTINGS = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def registry(tmp: Path) -> dict[str, list[str]]:
    """Every method the daemon registers, with its params' field names."""
    core = DaemonCore(tmp / "s.sock", tmp / "none.toml", tmp / "data")
    try:
        return {name: list(m.params.model_fields) for name, m in core.registry.methods.items()}
    finally:
        core.store.close()


@pytest.fixture
def fuzz_daemon(make_daemon: Any, upstream: Upstream) -> Daemon:
    """A daemon with a ``nokey`` provider that fails fast for want of a key, and no OS
    keyring (keyring's own setting), so thousands of calls never wait on D-Bus."""
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    d: Daemon = make_daemon(fake_provider_config(upstream, extra=NOKEY), env=env)
    return d


def exchange(path: Path, data: bytes, timeout: float = 20) -> list[Any]:
    """Send ``data`` on a fresh connection, end input, and return every message answered."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    s.settimeout(timeout)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon closed first (a bad frame): its answer is still readable
        out = bytearray()
        try:
            while chunk := s.recv(1 << 16):
                out += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread, after it answered
    finally:
        s.close()
    lsp = data.lstrip(b" \t\r\n")[:1] in (b"C", b"c")
    return parse_lsp(bytes(out)) if lsp else [json.loads(x) for x in out.splitlines()]


def parse_lsp(data: bytes) -> list[Any]:
    """Split LSP-framed answers; each must have an exact Content-Length."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"unterminated LSP header: {data[:80]!r}"
        assert head.startswith(b"Content-Length: "), head
        n = int(head.split(b":")[1])
        assert len(rest) >= n, "short LSP body"
        out.append(json.loads(rest[:n]))
        data = rest[n:]
    return out


def check(message: Any) -> list[dict[str, Any]]:
    """Assert one message (or batch answer) is well-formed JSON-RPC 2.0; return responses."""
    items = message if isinstance(message, list) else [message]
    assert items, "an empty batch answer"
    responses = []
    for m in items:
        assert isinstance(m, dict) and m.get("jsonrpc") == "2.0", m
        if "method" in m:  # a notification for a request in flight
            assert "id" not in m and isinstance(m.get("params"), dict), m
            continue
        assert "id" in m, m
        assert ("result" in m) != ("error" in m), m
        if "error" in m:
            e = m["error"]
            assert type(e.get("code")) is int and isinstance(e.get("message"), str), m
        responses.append(m)
    return responses


def valid_id(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def expect_answers(d: Daemon, requests: list[Any], raw: bytes) -> None:
    """Every request with a usable id is answered exactly once, under its own id."""
    answers = [r for m in exchange(d.socket, raw) for r in check(m)]
    expected: Counter[str] = Counter()
    for req in requests:
        for r in req if isinstance(req, list) else [req]:
            if isinstance(r, dict) and r.get("jsonrpc") == "2.0" and valid_id(r.get("id")):
                expected[json.dumps(r["id"])] += 1
    got = Counter(json.dumps(a["id"]) for a in answers if a["id"] is not None)
    assert got == expected


def assert_alive(d: Daemon) -> None:
    assert d.proc.poll() is None, d.stderr()[-2000:]
    status = d.call("daemon/status")
    assert status["pid"] == d.proc.pid
    assert status["active_requests"] == 0


_REGISTRY: dict[str, list[str]] = {}


def registry_fields() -> dict[str, list[str]]:
    """The registry's methods (minus the excluded ones) and their params, read once."""
    if not _REGISTRY:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            _REGISTRY.update(registry(Path(tmp)))
    return {k: v for k, v in _REGISTRY.items() if k not in EXCLUDED}


def guard_params(req: dict[str, Any]) -> dict[str, Any]:
    """Point anything that could reach a provider at ``nokey``; never run excluded methods."""
    method = req.get("method")
    if not isinstance(method, str):
        return req
    if method in EXCLUDED:
        req, method = {**req, "method": "daemon/status"}, "daemon/status"
    fields = _REGISTRY.get(method, [])
    params = req.get("params", {})
    if params is None:
        params = {}
    if isinstance(params, dict) and "provider" in fields:  # a non-object is refused anyway
        params = {**params, "provider": "nokey"}
        if "model" in fields:
            params["model"] = "nokey-model"
        req = {**req, "params": params}
    return req


def examples(test: Any, n: int) -> Any:
    """``test`` run for ``n`` examples with the module's settings."""
    return settings(SETTINGS, max_examples=n)(test)


# Text includes lone surrogates (sent as "\\udXXX" escapes), which a client can always send.
texts = st.text(st.characters(exclude_categories=()))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
ids = st.integers() | texts | json_values


def test_random_byte_lines_get_well_formed_answers(fuzz_daemon: Daemon) -> None:
    """Lines of random bytes (any framing they happen to look like) get only well-formed
    answers, and the daemon lives on."""

    @given(st.lists(st.binary(max_size=120), min_size=1, max_size=6))
    def run(lines: list[bytes]) -> None:
        for m in exchange(fuzz_daemon.socket, b"\n".join(lines) + b"\n"):
            check(m)

    examples(run, 1500)()
    assert_alive(fuzz_daemon)


def test_random_json_requests_are_answered_under_their_ids(fuzz_daemon: Daemon) -> None:
    """Random JSON values, requests and batches with odd ids, versions, methods and
    params: each usable id gets exactly one well-formed answer."""
    methods = st.sampled_from(sorted(registry_fields())) | texts
    request = st.fixed_dictionaries(
        {"jsonrpc": st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2])},
        optional={"id": ids, "method": methods | json_values, "params": json_values},
    ).map(guard_params)
    message = request | st.lists(request, max_size=5) | json_values

    @given(st.lists(message, min_size=1, max_size=5))
    def run(msgs: list[Any]) -> None:
        raw = b"".join(json.dumps(m).encode() + b"\n" for m in msgs)
        expect_answers(fuzz_daemon, msgs, raw)

    examples(run, 1500)()
    assert_alive(fuzz_daemon)


def test_registry_methods_with_random_params(fuzz_daemon: Daemon) -> None:
    """Every method of the registry, with random values for its own params (and some
    unknown ones), answers well-formed JSON-RPC under the request's id."""
    fields = registry_fields()
    names = sorted(fields)

    @st.composite
    def calls(draw: st.DrawFn) -> dict[str, Any]:
        name = draw(st.sampled_from(names))
        keys = (
            st.sampled_from([*fields[name], "token", "unknown_param"])
            if fields[name]
            else st.sampled_from(["token", "unknown_param"])
        )
        params = draw(st.dictionaries(keys, json_values, max_size=6))
        req = {"jsonrpc": "2.0", "id": draw(st.integers() | texts),
               "method": name, "params": params}  # fmt: skip
        return guard_params(req)

    @given(st.lists(calls(), min_size=1, max_size=4))
    def run(reqs: list[dict[str, Any]]) -> None:
        raw = b"".join(json.dumps(r).encode() + b"\n" for r in reqs)
        expect_answers(fuzz_daemon, reqs, raw)

    examples(run, 1500)()
    assert fuzz_daemon.call("conversations/list")["total"] == 0
    assert_alive(fuzz_daemon)


def test_lsp_frames_with_wrong_lengths(fuzz_daemon: Daemon) -> None:
    """LSP frames whose Content-Length is short, long, negative, absent or not a number
    get LSP-framed, well-formed answers (a bad frame ends the connection), and valid
    frames among them are answered."""
    body = st.one_of(
        st.integers(0, 1000).map(
            lambda i: json.dumps({"jsonrpc": "2.0", "id": i, "method": "daemon/status"})
        ),
        json_values.map(json.dumps),
        st.text(max_size=40),
    ).map(str.encode)

    @st.composite
    def frame(draw: st.DrawFn) -> bytes:
        b = draw(body)
        length = draw(st.sampled_from(["exact", "exact", "delta", "junk", "none"]))
        name = draw(st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH"]))
        if length == "exact":
            head = f"{name}: {len(b)}\r\n"
        elif length == "delta":
            head = f"{name}: {len(b) + draw(st.integers(-20, 20))}\r\n"
        elif length == "junk":
            head = f"{name}: {draw(st.text(max_size=6))}\r\n"
        else:
            head = ""
        extra = draw(st.sampled_from(["", "Content-Type: application/vscode-jsonrpc\r\n"]))
        return (head + extra + "\r\n").encode("utf-8", "surrogatepass") + b

    @given(st.lists(frame(), min_size=1, max_size=4))
    def run(frames: list[bytes]) -> None:
        data = b"".join(frames)
        if data.lstrip(b" \t\r\n")[:1] not in (b"C", b"c"):
            data = b"Content-Length: 2\r\n\r\n{}" + data  # make the connection LSP-framed
        for m in exchange(fuzz_daemon.socket, data):
            check(m)

    examples(run, 1000)()
    assert_alive(fuzz_daemon)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"jsonrpc":"2.0","id":"\\udc80","method":"daemon/status"}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"no/such\\ud800"}\n',
        b'{"jsonrpc":"2.0","id":2,"method":"conversations/get","params":{"id":"\\udfff"}}\n',
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
        b'{"jsonrpc":"2.0","id":3,"method":"daemon/status","params":'
        + b"[" * 5000
        + b"]" * 5000
        + b"}\n",
        b"\xef\xbb\xbf" + b'{"jsonrpc":"2.0","id":4,"method":"daemon/status"}\n',
        b'{"jsonrpc":"2.0","id":5,"method":"daemon/status"}' + b"\x00" * 10 + b"\n",
        b"\n\n  \n" + b'{"jsonrpc":"2.0","id":6,"method":"daemon/status"}',
    ],
    ids=[
        "surrogate-id",
        "surrogate-method",
        "surrogate-param",
        "deep-array",
        "deep-params",
        "bom",
        "nul-tail",
        "no-final-newline",
    ],
)
def test_edge_cases_are_answered(fuzz_daemon: Daemon, raw: bytes) -> None:
    """Lone surrogates, very deep nesting, a BOM, NULs and a missing final newline each
    get exactly one well-formed answer, and the daemon lives on."""
    answers = [r for m in exchange(fuzz_daemon.socket, raw) for r in check(m)]
    assert len(answers) == 1, answers
    assert_alive(fuzz_daemon)
