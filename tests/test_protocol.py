"""Protocol conformance over a real socket: framing, batches, notifications, every row of
the error table, half-close, cancellation, oversized lines, and other uids refused."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import Daemon, fake_provider_config
from tests.rawsock import Raw, req, until
from tests.upstream import Upstream


def test_status_over_socat(daemon: Daemon) -> None:
    """daemon/status answers a newline-delimited request sent with socat."""
    out = subprocess.run(
        ["socat", "-", f"UNIX-CONNECT:{daemon.socket}"],
        input=b'{"jsonrpc":"2.0","id":1,"method":"daemon/status"}\n',
        capture_output=True,
        timeout=10,
        check=True,
    )
    reply = json.loads(out.stdout)
    assert reply["id"] == 1 and reply["result"]["protocol"] == 1
    assert reply["result"]["pid"] == daemon.proc.pid


def test_status_over_lsp_framing(daemon: Daemon) -> None:
    """A Content-Length framed request gets a Content-Length framed answer."""
    body = json.dumps({"jsonrpc": "2.0", "id": "a", "method": "daemon/status"}).encode()
    r = Raw(daemon.socket)
    r.send(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    head = b""
    while b"\r\n\r\n" not in head:
        head += r.sock.recv(1)
    length = int(head.split(b":")[1].strip().split(b"\r\n")[0])
    payload = b""
    while len(payload) < length:
        payload += r.sock.recv(length - len(payload))
    assert json.loads(payload)["result"]["socket"] == str(daemon.socket)


def test_socket_and_folder_are_private(daemon: Daemon) -> None:
    """The socket is 0600 and its folder 0700, both owned by the user."""
    assert daemon.socket.stat().st_mode & 0o777 == 0o600
    assert daemon.socket.parent.stat().st_mode & 0o777 == 0o700
    assert daemon.socket.stat().st_uid == os.getuid()


def test_parse_error(daemon: Daemon) -> None:
    """A line that is not JSON gets -32700 with a null id, and the connection stays usable."""
    r = Raw(daemon.socket)
    r.send(b"{not json\n")
    reply = r.line()
    assert isinstance(reply, dict) and reply["error"]["code"] == -32700 and reply["id"] is None
    r.send(req(2, "daemon/status"))
    assert "result" in r.response(2)


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1, "method": "daemon/status"},
        {"jsonrpc": "1.0", "id": 1, "method": "x"},
        {"jsonrpc": "2.0", "id": 1.5, "method": "daemon/status"},
        {"jsonrpc": "2.0", "id": 1},
        [],
        42,
    ],
)
def test_invalid_request(daemon: Daemon, message: Any) -> None:
    """Anything that is not a JSON-RPC 2.0 request gets -32600."""
    r = Raw(daemon.socket)
    r.send(message)
    reply = r.line()
    assert isinstance(reply, dict) and reply["error"]["code"] == -32600


def test_method_not_found(daemon: Daemon) -> None:
    """An unknown method gets -32601 naming it."""
    with pytest.raises(RpcError) as e:
        daemon.call("no/such")
    assert e.value.code == -32601 and e.value.data["method"] == "no/such"


def test_invalid_params_lists_errors(daemon: Daemon) -> None:
    """Bad params get -32602 with pydantic's error list and no echo of the input."""
    with pytest.raises(RpcError) as e:
        daemon.call("chat/send", {"message": 5, "temperature": "hot", "bogus": 1})
    assert e.value.code == -32602
    locs = {tuple(err["loc"]) for err in e.value.data["errors"]}
    assert {("message",), ("temperature",), ("bogus",)} <= locs
    assert all("input" not in err for err in e.value.data["errors"])


def test_params_by_position_refused(daemon: Daemon) -> None:
    """Params must be an object: an array gets -32602."""
    r = Raw(daemon.socket)
    r.send({"jsonrpc": "2.0", "id": 1, "method": "conversations/get", "params": ["x"]})
    assert r.response(1)["error"]["code"] == -32602


def test_notifications_get_no_response(daemon: Daemon) -> None:
    """A notification gets no response, even an unknown method or bad params."""
    r = Raw(daemon.socket, timeout=1.0)
    r.send({"jsonrpc": "2.0", "method": "no/such"})
    r.send({"jsonrpc": "2.0", "method": "conversations/get", "params": {}})
    r.send(req(9, "daemon/status"))
    first = r.line()
    assert isinstance(first, dict) and first["id"] == 9


def test_batch(daemon: Daemon) -> None:
    """A batch gets one array holding a response per request, none for notifications."""
    r = Raw(daemon.socket)
    r.send(
        [
            req(1, "daemon/status"),
            {"jsonrpc": "2.0", "method": "daemon/status"},
            req("two", "no/such"),
            {"foo": 1},
        ]
    )
    reply = r.line()
    assert isinstance(reply, list) and len(reply) == 3
    by_id = {str(x["id"]): x for x in reply}
    assert "result" in by_id["1"] and by_id["two"]["error"]["code"] == -32601
    assert by_id["None"]["error"]["code"] == -32600


def test_batch_of_notifications_gets_nothing(daemon: Daemon) -> None:
    """A batch made only of notifications gets no response at all."""
    r = Raw(daemon.socket, timeout=1.0)
    r.send([{"jsonrpc": "2.0", "method": "daemon/status"}])
    r.send(req(5, "daemon/status"))
    reply = r.line()
    assert isinstance(reply, dict) and reply["id"] == 5


def test_internal_error_keeps_serving(daemon: Daemon, isolated_dirs: Path) -> None:
    """A failure inside a handler gets -32603, a traceback in the log, and the daemon serves on."""
    db = isolated_dirs / "data" / "assistantd" / "conversations.sqlite3"
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE search")  # a schema the code does not expect
    with pytest.raises(RpcError) as e:
        daemon.call("conversations/list", {"query": "x"})
    assert e.value.code == -32603
    assert daemon.call("daemon/status")["pid"] == daemon.proc.pid
    log = (isolated_dirs / "state" / "assistantd" / "log" / "assistantd.log").read_text()
    assert "Traceback" in log and "no such table" in log


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(srv.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for s in held:
        s.close()
    srv.close()


def test_cancel_other_request_gets_32800(
    make_daemon: Any, upstream: Upstream, black_hole: int
) -> None:
    """$/cancelRequest on a request other than chat/summarize answers it with -32800 at once."""
    extra = f'[providers.hole]\nbase_url = "http://127.0.0.1:{black_hole}/v1"\nneeds_key = false\n'
    d = make_daemon(fake_provider_config(upstream, extra=extra))
    r = Raw(d.socket)
    r.send(req(7, "models/list", {"provider": "hole"}))
    until(lambda: d.call("daemon/status")["active_requests"] >= 1, what="models/list to start")
    t0 = time.monotonic()
    r.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 7}})
    reply = r.response(7)
    assert reply["error"]["code"] == -32800
    assert time.monotonic() - t0 < 1.0


def test_no_api_key(make_daemon: Any, upstream: Upstream) -> None:
    """A provider that needs a key and has none gets -32001 naming the provider; nothing is stored."""
    d = make_daemon(fake_provider_config(upstream, needs_key=True))
    with pytest.raises(RpcError) as e:
        d.call("chat/send", {"message": "hi"})
    assert e.value.code == -32001 and e.value.data["provider"] == "fake"
    assert d.call("conversations/list")["total"] == 0


def test_upstream_error(daemon: Daemon) -> None:
    """A provider's 4xx answer is -32002 with its status and message."""
    with pytest.raises(RpcError) as e:
        daemon.call("chat/send", {"message": "[[error:403]]"})
    assert e.value.code == -32002
    assert e.value.data["status"] == 403 and e.value.data["provider"] == "fake"


def test_not_found(daemon: Daemon) -> None:
    """Unknown conversations and providers are -32004 with kind and id."""
    for method, params, kind in [
        ("conversations/get", {"id": "nope"}, "conversation"),
        ("chat/send", {"message": "x", "conversation_id": "nope"}, "conversation"),
        ("chat/send", {"message": "x", "provider": "nope"}, "provider"),
    ]:
        with pytest.raises(RpcError) as e:
            daemon.call(method, params)
        assert (e.value.code, e.value.data["kind"], e.value.data["id"]) == (-32004, kind, "nope")


def test_busy(daemon: Daemon, upstream: Upstream) -> None:
    """A second chat/send in a conversation that is still answering gets -32005."""
    cid = daemon.call("chat/send", {"message": "first"})["conversation_id"]
    slow = daemon.client()
    slow.send(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "chat/send",
            "params": {"message": "[[words:20]] [[slow:0.1]]", "conversation_id": cid},
        }
    )
    until(lambda: upstream.in_flight >= 1, what="the first answer to stream")
    with pytest.raises(RpcError) as e:
        daemon.call("chat/send", {"message": "second", "conversation_id": cid})
    assert e.value.code == -32005
    slow.close()


def test_half_close_finishes_requests(daemon: Daemon) -> None:
    """End of input (shutdown of the sending side) still gets the answers in flight."""
    r = Raw(daemon.socket)
    r.send(req(1, "chat/send", {"message": "[[words:10]] [[slow:0.05]]"}))
    r.sock.shutdown(socket.SHUT_WR)
    reply = r.response(1)
    assert reply["result"]["text"] == " ".join(f"w{i}" for i in range(1, 11))
    assert r.line() is None  # then the daemon closes


def test_lost_connection_cancels(daemon: Daemon, upstream: Upstream) -> None:
    """A closed connection cancels its chat: the upstream stream is closed, the partial kept."""
    r = Raw(daemon.socket)
    r.send(req(1, "chat/send", {"message": "[[words:200]] [[slow:0.05]]"}))
    first = r.line()
    assert isinstance(first, dict) and first["method"] == "chat/delta"
    cid = first["params"]["conversation_id"]
    r.close()
    deadline = time.monotonic() + 5
    while upstream.cancelled_streams < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.cancelled_streams == 1

    def last() -> dict[str, Any]:
        msg: dict[str, Any] = daemon.call("conversations/get", {"id": cid})["messages"][-1]
        return msg

    until(lambda: last()["role"] == "assistant", what="the partial answer to be stored")
    msgs = daemon.call("conversations/get", {"id": cid})["messages"]
    assert msgs[-1]["role"] == "assistant" and msgs[-1]["status"] == "partial"
    assert 0 < len(msgs[-1]["content"].split()) < 200


def test_cancel_chat_returns_partial(daemon: Daemon, upstream: Upstream) -> None:
    """$/cancelRequest on chat/send answers at once with finish_reason cancelled and the text so far."""
    r = Raw(daemon.socket)
    r.send(req("c1", "chat/send", {"message": "[[words:200]] [[slow:0.05]]", "token": "tok"}))
    note = r.line()
    assert isinstance(note, dict)
    assert note["params"]["request_id"] == "c1" and note["params"]["token"] == "tok"
    r.notes_until(4)  # the answer is streaming
    t0 = time.monotonic()
    r.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "c1"}})
    reply = r.response("c1")["result"]
    assert time.monotonic() - t0 < 0.5
    assert reply["finish_reason"] == "cancelled"
    deltas = note["params"]["text"] + "".join(n["params"]["text"] for n in r.notes)
    assert reply["text"] == deltas and 0 < len(reply["text"].split()) < 200
    msgs = daemon.call("conversations/get", {"id": reply["conversation_id"]})["messages"]
    assert (msgs[-1]["status"], msgs[-1]["content"]) == ("partial", reply["text"])
    until(lambda: upstream.cancelled_streams == 1, what="the upstream stream to close")


def test_responses_out_of_order(daemon: Daemon) -> None:
    """Requests on one connection run concurrently: a quick one overtakes a slow one."""
    r = Raw(daemon.socket)
    r.send(req(1, "chat/send", {"message": "[[words:10]] [[slow:0.1]]"}))
    r.send(req(2, "daemon/status"))
    seen = []
    while len(seen) < 2:
        msg = r.line()
        assert isinstance(msg, dict)
        if "id" in msg:
            seen.append(msg["id"])
    assert seen == [2, 1]


def test_other_uid_refused(daemon: Daemon) -> None:
    """A connection from another uid is dropped before a byte is read, even on an open socket."""
    daemon.socket.parent.chmod(0o755)
    daemon.socket.chmod(0o666)
    daemon.socket.parent.parent.chmod(0o755)
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "socat",
            "-t",
            "5",
            "-",
            f"UNIX-CONNECT:{daemon.socket}",
        ],
        input=b'{"jsonrpc":"2.0","id":1,"method":"daemon/status"}\n',
        capture_output=True,
        timeout=20,
    )
    assert out.stdout == b"", out.stdout  # connected, and closed without an answer
    assert b"Permission denied" not in out.stderr
    assert "refused a connection from uid" in daemon.stderr()
    assert daemon.call("daemon/status")["pid"] == daemon.proc.pid


def test_cancel_chat_at_once_still_answers(make_daemon: Any, upstream: Upstream) -> None:
    """A chat/send cancelled before the provider is even called gets a cancelled result, and
    its question is stored."""
    d = make_daemon(fake_provider_config(upstream))  # fresh: the first send loads the SDK
    r = Raw(d.socket)
    r.send(req(1, "chat/send", {"message": "cancel me at once"}))
    r.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 1}})
    reply = r.response(1)["result"]
    assert reply["finish_reason"] == "cancelled"
    msgs = d.call("conversations/get", {"id": reply["conversation_id"]})["messages"]
    assert msgs[0]["content"] == "cancel me at once"
    assert msgs[-1]["status"] == "partial"
