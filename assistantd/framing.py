"""Message framing on a connection: newline-delimited JSON or LSP ``Content-Length``.

The first non-blank byte of a connection decides: a ``C`` (``Content-Length:``) means
LSP framing; anything else is newline-delimited JSON (so a garbage line still gets a
parse error rather than a hang). Answers use the framing the client used.
"""

from __future__ import annotations

import asyncio
import enum
import json
from typing import Any

MAX_MESSAGE = 16 * 1024 * 1024  # bytes; a longer message closes the connection
CHUNK = 256 * 1024  # bytes taken from the stream at a time; the loop is yielded after each
# The server's StreamReader limit: it buffers at most twice this before it stops reading
# the socket (this reader keeps its own buffer, so a big limit only costs memory).
STREAM_LIMIT = CHUNK
_BLANK = b" \t\r\n"


class Framing(enum.Enum):
    NDJSON = "ndjson"
    LSP = "lsp"


class TooLarge(Exception):
    """A message longer than ``MAX_MESSAGE``."""


class FrameError(Exception):
    """LSP headers that cannot be read (no or bad ``Content-Length``)."""


class MessageReader:
    """Reads whole messages (as bytes) from a stream, detecting the framing.

    It keeps its own buffer and takes the stream's bytes a chunk at a time, yielding to
    the event loop after each chunk: bytes already buffered are handed out without a
    pause, so a client that floods a connection (blank lines, spaces) would otherwise
    hold every other connection. Blank runs between messages are dropped in bulk.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.framing: Framing | None = None
        self._buf = bytearray()
        self._scanned = 0  # bytes at the start of ``_buf`` known to hold no delimiter
        self._eof = False

    async def _fill(self) -> bool:
        """Append the next chunk of the stream; False at end of input."""
        if self._eof:
            return False
        chunk = await self._reader.read(CHUNK)
        await asyncio.sleep(0)  # a read from a full buffer does not yield by itself
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _skip_blank(self) -> None:
        """Drop the blanks in front of the next message (none inside one)."""
        if self._scanned == 0 and self._buf and self._buf[0] in _BLANK:
            del self._buf[: len(self._buf) - len(self._buf.lstrip(_BLANK))]

    async def read(self) -> bytes | None:
        """The next message, or None at end of input."""
        if self.framing is None:
            while True:
                self._skip_blank()
                if self._buf:
                    break
                if not await self._fill():
                    return None
            self.framing = Framing.LSP if self._buf[0] in b"Cc" else Framing.NDJSON
        if self.framing is Framing.LSP:
            return await self._read_lsp()
        return await self._read_line()

    async def _until(self, delimiter: bytes) -> bytes | None:
        """The buffered bytes up to and including ``delimiter`` (blanks before them
        dropped); None at end of input with nothing but blanks left.

        Raises ``TooLarge`` past ``MAX_MESSAGE`` and ``EOFError`` at end of input inside
        a message (the partial message is left in the buffer)."""
        while True:
            self._skip_blank()
            at = self._buf.find(delimiter, max(0, self._scanned - len(delimiter) + 1))
            if at >= 0:
                end = at + len(delimiter)
                out = bytes(self._buf[:end])
                del self._buf[:end]
                self._scanned = 0
                return out
            self._scanned = len(self._buf)
            if len(self._buf) > MAX_MESSAGE + len(delimiter):
                raise TooLarge
            if not await self._fill():
                if self._buf:
                    raise EOFError
                return None

    async def _read_line(self) -> bytes | None:
        try:
            line = await self._until(b"\n")
        except EOFError:  # a last line without its newline still counts
            line = bytes(self._buf)
            self._buf.clear()
            self._scanned = 0
        if line is not None and len(line) > MAX_MESSAGE + 1:
            raise TooLarge
        return line

    async def _read_lsp(self) -> bytes | None:
        try:
            head = await self._until(b"\r\n\r\n")
        except EOFError:
            raise FrameError("connection ended inside LSP headers") from None
        if head is None:
            return None
        length = None
        for raw in head.decode("ascii", "replace").split("\r\n"):
            key, _, value = raw.partition(":")
            if key.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError as e:
                    raise FrameError("bad Content-Length") from e
        if length is None or length < 0:
            raise FrameError("missing Content-Length")
        if length > MAX_MESSAGE:
            raise TooLarge
        while len(self._buf) < length:
            if not await self._fill():
                raise FrameError("connection ended inside an LSP body")
        body = bytes(self._buf[:length])
        del self._buf[:length]
        return body


def encode(message: Any, framing: Framing | None) -> bytes:
    """One message, framed as the client frames its own."""
    try:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate (a client's "\udc80" echoed back): escape it
        body = json.dumps(message, separators=(",", ":")).encode()
    if framing is Framing.LSP:
        return b"Content-Length: %d\r\n\r\n" % len(body) + body
    return body + b"\n"
