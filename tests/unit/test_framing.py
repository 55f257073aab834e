"""framing: reading NDJSON and LSP frames from a byte stream (in-process)."""

from __future__ import annotations

import asyncio
import json

import pytest

from assistantd import framing


async def read_all(data: bytes) -> tuple[list[bytes], framing.Framing | None]:
    reader = asyncio.StreamReader(limit=framing.MAX_MESSAGE + 2)
    reader.feed_data(data)
    reader.feed_eof()
    frames = framing.MessageReader(reader)
    out = []
    while (msg := await frames.read()) is not None:
        out.append(msg)
    return out, frames.framing


def test_ndjson_lines_are_messages_and_blank_lines_are_skipped() -> None:
    """Newline-delimited JSON yields one message per non-blank line; a last line may lack its newline."""
    got, kind = asyncio.run(read_all(b'\n\n{"a":1}\n   \n{"b":2}'))
    assert [json.loads(m) for m in got] == [{"a": 1}, {"b": 2}]
    assert kind is framing.Framing.NDJSON


def test_lsp_frames_are_detected_by_their_header() -> None:
    """A connection that starts with Content-Length is read as LSP frames."""
    body = b'{"jsonrpc":"2.0","id":1,"method":"daemon/status"}'
    data = b"Content-Length: %d\r\n\r\n%s" % (len(body), body) * 2
    got, kind = asyncio.run(read_all(data))
    assert got == [body, body]
    assert kind is framing.Framing.LSP


def test_a_bad_content_length_is_a_frame_error() -> None:
    """An LSP header with a non-numeric length raises FrameError."""
    with pytest.raises(framing.FrameError):
        asyncio.run(read_all(b"Content-Length: ten\r\n\r\n{}"))


def test_an_lsp_body_over_the_limit_is_too_large() -> None:
    """A declared LSP body over 16 MiB raises TooLarge before it is read."""
    with pytest.raises(framing.TooLarge):
        asyncio.run(read_all(b"Content-Length: %d\r\n\r\n" % (framing.MAX_MESSAGE + 1)))


def test_encode_answers_in_the_clients_framing() -> None:
    """A reply is a JSON line for NDJSON clients and a Content-Length frame for LSP ones."""
    msg = {"jsonrpc": "2.0", "id": 1, "result": {"t": "é\n"}}
    line = framing.encode(msg, framing.Framing.NDJSON)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    frame = framing.encode(msg, framing.Framing.LSP)
    head, _, body = frame.partition(b"\r\n\r\n")
    assert head == b"Content-Length: %d" % len(body)
    assert json.loads(body) == msg


def test_encode_escapes_a_lone_surrogate() -> None:
    """A lone surrogate echoed back from a client is escaped, not a crash."""
    assert b"\\udc80" in framing.encode({"id": "\udc80"}, framing.Framing.NDJSON)
