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
_BLANK = b" \t\r\n"


class Framing(enum.Enum):
    NDJSON = "ndjson"
    LSP = "lsp"


class TooLarge(Exception):
    """A message longer than ``MAX_MESSAGE``."""


class FrameError(Exception):
    """LSP headers that cannot be read (no or bad ``Content-Length``)."""


class MessageReader:
    """Reads whole messages (as bytes) from a stream, detecting the framing."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self.framing: Framing | None = None
        self._prefix = b""

    async def _detect(self) -> bool:
        while True:
            first = await self._reader.read(1)
            if not first:
                return False
            if first not in _BLANK:
                break
        self._prefix = first
        self.framing = Framing.LSP if first in b"Cc" else Framing.NDJSON
        return True

    async def read(self) -> bytes | None:
        """The next message, or None at end of input."""
        if self.framing is None and not await self._detect():
            return None
        if self.framing is Framing.LSP:
            return await self._read_lsp()
        return await self._read_line()

    async def _read_line(self) -> bytes | None:
        while True:
            try:
                line = await self._reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as e:
                line = e.partial  # a last line without its newline still counts
                if not line and not self._prefix:
                    return None
            except (asyncio.LimitOverrunError, ValueError) as e:
                raise TooLarge from e
            line, self._prefix = self._prefix + line, b""
            if len(line) > MAX_MESSAGE + 1:
                raise TooLarge
            if line.strip():
                return line
            if self._reader.at_eof():
                return None

    async def _read_lsp(self) -> bytes | None:
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial.strip() and not self._prefix:
                return None
            raise FrameError("connection ended inside LSP headers") from e
        except (asyncio.LimitOverrunError, ValueError) as e:
            raise TooLarge from e
        head, self._prefix = self._prefix + head, b""
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
        try:
            return await self._reader.readexactly(length)
        except asyncio.IncompleteReadError as e:
            raise FrameError("connection ended inside an LSP body") from e


def encode(message: Any, framing: Framing | None) -> bytes:
    """One message, framed as the client frames its own."""
    try:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate (a client's "\udc80" echoed back): escape it
        body = json.dumps(message, separators=(",", ":")).encode()
    if framing is Framing.LSP:
        return b"Content-Length: %d\r\n\r\n" % len(body) + body
    return body + b"\n"
