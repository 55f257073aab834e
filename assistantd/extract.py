"""Reading a fetched page: its charset (the WHATWG Encoding Standard's labels, no other)
and its main text (trafilatura), in a worker process that a deadline can kill.

trafilatura and lxml run C code that no thread can interrupt, and hostile HTML keeps
them busy for a long time (2 MB of paragraphs: 16 s; 3 MB of ``<span>``: 33 s). So
the daemon never imports them: ``Extractor`` hands each page to a ``python -m
assistantd.extract`` child over its pipes (frames of a 4-byte big-endian length: a
JSON header, then the raw body; the answer is one JSON frame). A child is started on
first use and reused (at most ``MAX_WORKERS`` at once; an idle one quits after
``IDLE_S``). When a request is cancelled, its extraction deadline passes or the daemon
stops, its child is killed with SIGKILL at once, and the next page starts a fresh
one. The kernel kills a child too (``PR_SET_PDEATHSIG``) if the daemon dies without
a word. A child also has an address-space limit, so a page cannot make it eat the
machine's memory.

Charsets: a label is looked up in ``LABELS`` only. Python's ``codecs`` know far more
names, among them transforms that are not text encodings (``rot13``, ``zlib``,
``base64``, ``hex``) and a quadratic decoder (``punycode``); a label that is not the
WHATWG's is ignored, as browsers ignore it: the page is decoded as if it named none.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import re
import struct
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal
from urllib.parse import urlsplit

from assistantd import errors

MAX_WORKERS = 2  # extractions at once: lxml is CPU-bound
IDLE_S = 300.0  # an idle worker quits after this long
START_TIMEOUT_S = 60.0  # to start Python and import trafilatura, on a loaded machine
MEMORY_LIMIT = 2 << 30  # bytes of address space a worker may map
_LENGTH = struct.Struct(">I")

# -- charsets --------------------------------------------------------------------------

# https://encoding.spec.whatwg.org/#names-and-labels: each encoding's Python codec and
# labels. "replacement" names encodings that browsers refuse to decode (ISO-2022-KR and
# kin, a cross-site-scripting risk); "x-user-defined" maps 0x80-0xFF to U+F780-U+F7FF.
_WHATWG: tuple[tuple[str, str], ...] = (
    ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    ("cp866", "866 cp866 csibm866 ibm866"),
    (
        "iso8859-2",
        "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 latin2",
    ),
    (
        "iso8859-3",
        "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 latin3",
    ),
    (
        "iso8859-4",
        "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 latin4",
    ),
    (
        "iso8859-5",
        "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
        "iso_8859-5:1988",
    ),
    (
        "iso8859-6",
        "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 "
        "iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987",
    ),
    (
        "iso8859-7",
        "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 "
        "iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek",
    ),
    (
        "iso8859-8",
        "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 "
        "iso88598 iso_8859-8 iso_8859-8:1988 visual csiso88598i iso-8859-8-i logical",
    ),
    ("iso8859-10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    ("iso8859-13", "iso-8859-13 iso8859-13 iso885913"),
    ("iso8859-14", "iso-8859-14 iso8859-14 iso885914"),
    ("iso8859-15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    ("iso8859-16", "iso-8859-16"),
    ("koi8-r", "cskoi8r koi koi8 koi8-r koi8_r"),
    ("koi8-u", "koi8-ru koi8-u"),
    ("mac-roman", "csmacintosh mac macintosh x-mac-roman"),
    ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    ("cp1250", "cp1250 windows-1250 x-cp1250"),
    ("cp1251", "cp1251 windows-1251 x-cp1251"),
    (
        "cp1252",
        "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 "
        "iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252",
    ),
    ("cp1253", "cp1253 windows-1253 x-cp1253"),
    (
        "cp1254",
        "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
        "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254",
    ),
    ("cp1255", "cp1255 windows-1255 x-cp1255"),
    ("cp1256", "cp1256 windows-1256 x-cp1256"),
    ("cp1257", "cp1257 windows-1257 x-cp1257"),
    ("cp1258", "cp1258 windows-1258 x-cp1258"),
    ("mac-cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    # WHATWG's GBK decoder is its gb18030 decoder; its Big5 holds HKSCS; its EUC-KR is
    # Windows-949 and its Shift_JIS is Windows-31J.
    (
        "gb18030",
        "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk gb18030",
    ),
    ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    ("euc-jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    ("iso2022-jp", "csiso2022jp iso-2022-jp"),
    ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    (
        "cp949",
        "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 "
        "ksc5601 ksc_5601 windows-949",
    ),
    ("replacement", "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr replacement"),
    ("utf-16-be", "unicodefffe utf-16be"),
    ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
    ("x-user-defined", "x-user-defined"),
)
LABELS: dict[str, str] = {label: codec for codec, names in _WHATWG for label in names.split()}
UTF16 = frozenset({"utf-16-le", "utf-16-be"})
_USER_DEFINED = {b: 0xF780 + b - 0x80 for b in range(0x80, 0x100)}
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,512}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE
)


class RefusedCharset(ValueError):
    """A page in an encoding browsers refuse to decode (ISO-2022-KR and kin)."""


def codec_for(label: str | None) -> str | None:
    """The Python codec for a WHATWG label (whitespace and case ignored), or None."""
    return LABELS.get(label.strip(" \t\n\f\r").lower()) if label else None


def decode(body: bytes, charset: str | None, *, html: bool) -> str:
    """Text from bytes as a browser reads them: a BOM, then the header's charset, then
    (HTML) a ``<meta>`` charset, then UTF-8 if valid, a detector's guess, windows-1252.

    Raises ``RefusedCharset`` for an encoding browsers refuse to decode."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(bom):
            return body.decode(name, errors="replace")
    codec = codec_for(charset)
    if codec is None and html and (m := _META_CHARSET.search(body[:8192])):
        codec = codec_for(m.group(1).decode("ascii"))
        # HTML: a <meta> that could be read as ASCII is not UTF-16; x-user-defined is 1252.
        codec = {"utf-16-le": "utf-8", "utf-16-be": "utf-8", "x-user-defined": "cp1252"}.get(
            codec or "", codec
        )
    if codec == "replacement":
        raise RefusedCharset(
            f"the page is in {charset or 'an encoding'}, which browsers do not decode"
        )
    if codec == "x-user-defined":
        return body.decode("latin-1").translate(_USER_DEFINED)
    if codec is not None:
        return body.decode(codec, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        import charset_normalizer

        best = charset_normalizer.from_bytes(body[:1_000_000]).best()
        if best is not None and best.encoding:
            return body.decode(best.encoding, errors="replace")
    except (ImportError, LookupError):
        pass
    return body.decode("cp1252", errors="replace")


# -- the worker's side -------------------------------------------------------------------

_ANCHORS = re.compile(r"[ \t]*¶[ \t]*$", re.MULTILINE)  # Sphinx's heading anchors


def _name(url: str) -> str | None:
    """A title for a page that has none: the last part of its path, or its host."""
    u = urlsplit(url)
    return u.path.rstrip("/").rsplit("/", 1)[-1] or u.hostname or None


def read_text(
    url: str, kind: Literal["html", "text"], charset: str | None, body: bytes
) -> tuple[str | None, str]:
    """(title, main text) of a page; HTML through trafilatura, as markdown so that
    paragraphs stay apart. Slow on hostile pages: the worker runs it."""
    text = decode(body, charset, html=kind == "html")
    if kind == "text":
        return _name(url), text.strip()
    import trafilatura

    doc = trafilatura.bare_extraction(
        text, url=url, with_metadata=True, include_formatting=True, include_comments=False
    )
    if doc is None:
        return _name(url), ""
    found = doc if isinstance(doc, dict) else {"title": doc.title, "text": doc.text}
    title = _ANCHORS.sub("", found.get("title") or "").strip() or _name(url)
    return title, _ANCHORS.sub("", found.get("text") or "").strip()


def _answer(header: dict[str, Any], body: bytes) -> dict[str, Any]:
    try:
        title, text = read_text(header["url"], header["kind"], header.get("charset"), body)
    except RefusedCharset as e:
        return {"error": str(e), "reason": "bad_charset"}
    except MemoryError:
        return {"error": "the page needs too much memory to parse", "reason": "too_large"}
    except Exception as e:  # lxml and trafilatura raise many kinds on hostile markup
        return {"error": f"the page could not be parsed: {type(e).__name__}", "reason": "no_text"}
    return {"title": title, "text": text}


def _read_frame(src: BinaryIO) -> bytes | None:
    head = src.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (n,) = _LENGTH.unpack(head)
    data = src.read(n)
    return data if len(data) == n else None


def _write_frame(dst: BinaryIO, data: bytes) -> None:
    dst.write(_LENGTH.pack(len(data)) + data)
    dst.flush()


def worker(parent: int) -> None:
    """Serve extractions on stdin/stdout until stdin closes."""
    import ctypes
    import resource
    import signal

    with contextlib.suppress(OSError, AttributeError):  # Linux only; elsewhere: EOF, kill
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(70)  # the daemon died before the line above took effect
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    # The protocol owns fd 1; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    src = sys.stdin.buffer
    import trafilatura  # noqa: F401  (imported before "ready", not in a request's time)

    _write_frame(out, b'{"ready": true}')
    while (header := _read_frame(src)) is not None and (body := _read_frame(src)) is not None:
        _write_frame(out, json.dumps(_answer(json.loads(header), body)).encode())


# -- the daemon's side -------------------------------------------------------------------


@dataclass(eq=False)  # compared and hashed by identity
class _Worker:
    proc: asyncio.subprocess.Process
    timer: asyncio.TimerHandle | None = None

    async def frame(self) -> bytes:
        assert self.proc.stdout is not None
        (n,) = _LENGTH.unpack(await self.proc.stdout.readexactly(_LENGTH.size))
        return await self.proc.stdout.readexactly(n)

    async def ask(self, header: dict[str, Any], body: bytes) -> dict[str, Any]:
        assert self.proc.stdin is not None
        head = json.dumps(header).encode()
        self.proc.stdin.write(_LENGTH.pack(len(head)) + head + _LENGTH.pack(len(body)) + body)
        await self.proc.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.frame())
        return answer

    def kill(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()  # asyncio's child watcher reaps it


def _env() -> dict[str, str]:
    """What the worker needs to start Python: no provider key or other secret."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep or k.startswith("LC_")}


class Extractor:
    """Extraction in worker processes; ``read`` is cancellable, ``close`` ends them all."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._gate = asyncio.Semaphore(max_workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()

    async def _start(self) -> _Worker:
        """A new worker, once it says it is ready. Call from the event loop's thread:
        the parent-death signal follows the thread that forked."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "assistantd.extract",
            str(os.getpid()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_env(),
            start_new_session=True,
        )
        w = _Worker(proc)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await w.frame()
        except BaseException:
            w.kill()
            raise
        return w

    async def _worker(self, url: str) -> _Worker:
        """An idle worker, or a new one; FetchFailed if none can be started."""
        while self._idle:
            w = self._idle.pop()
            if w.timer is not None:
                w.timer.cancel()
            if w.proc.returncode is None:
                return w
        try:
            return await self._start()
        except (OSError, EOFError, TimeoutError) as e:
            msg = f"the text extractor did not start: {type(e).__name__}: {e}"
            raise errors.FetchFailed(msg, url=url, reason="no_text") from None

    async def read(
        self,
        url: str,
        kind: Literal["html", "text"],
        charset: str | None,
        body: bytes,
        timeout_s: float,
    ) -> tuple[str | None, str]:
        """(title, text) of a page, or FetchFailed; the worker is killed if this is
        cancelled or takes longer than ``timeout_s``."""
        async with self._gate:
            w = await self._worker(url)
            self._busy.add(w)
            ok = False
            try:
                async with asyncio.timeout(timeout_s):
                    answer = await w.ask({"url": url, "kind": kind, "charset": charset}, body)
                ok = True
            except TimeoutError:
                msg = (
                    f"reading the page's text took longer than {timeout_s:g} s "
                    "(the config's [summarize] extract_timeout_s)"
                )
                raise errors.FetchFailed(msg, url=url, reason="timeout") from None
            except (OSError, EOFError, ValueError) as e:  # the worker died or garbled
                code = w.proc.returncode
                why = f"exit status {code}" if code is not None else type(e).__name__
                msg = f"the text extractor failed on this page ({why})"
                raise errors.FetchFailed(msg, url=url, reason="no_text") from None
            finally:
                self._busy.discard(w)
                if ok:
                    self._park(w)
                else:
                    w.kill()  # cancelled, past its deadline, or broken: never reused
        if "error" in answer:
            raise errors.FetchFailed(answer["error"], url=url, reason=answer["reason"])
        return answer.get("title"), answer.get("text") or ""

    def _park(self, w: _Worker) -> None:
        self._idle.append(w)
        w.timer = asyncio.get_running_loop().call_later(IDLE_S, self._retire, w)

    def _retire(self, w: _Worker) -> None:
        if w in self._idle:
            self._idle.remove(w)
        w.kill()

    async def aclose(self) -> None:
        """Kill every worker, idle or busy (at daemon shutdown), and reap them."""
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for w in workers:
            w.kill()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                for w in workers:
                    await w.proc.wait()


if __name__ == "__main__":
    worker(int(sys.argv[1]))
