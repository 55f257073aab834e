"""Fetching and reading a page for ``summarize/url``: http(s) only, bounded in size and time.

Redirects are followed by hand, so every hop's scheme is checked (a redirect to
``ftp:`` or ``file:`` is refused) and counted. The body is read as a stream: a huge or
endless body is cut at the size cap, a slow drip at the total deadline. Every failure
is one ``errors.FetchFailed`` whose ``reason`` a client can act on: not_http, bad_url,
too_large, timeout, status_<code>, unsupported_type, too_many_redirects, unreachable
(and no_text, raised by the extractor).

``PageCache`` keeps extracted text by URL with the validators (ETag, Last-Modified)
the server gave, so a second summary of a page costs at most a conditional GET.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from assistantd import __version__, errors

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger("assistantd.fetch")

USER_AGENT = f"assistantd/{__version__} (page summarizer; +python-httpx2)"
ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
STEP_TIMEOUT_S = 10.0  # connect, and each read; the whole fetch has its own deadline
# curl's --speed-limit/--speed-time: a body slower than this over that long is given up
# on (a slow drip defeats the read timeout, and the total deadline may be long).
LOW_SPEED_BPS, LOW_SPEED_S = 1024, 5.0
DEFAULT_FRESH_S = 600.0  # how long a page with no validators is reused without asking
# WHATWG: these labels mean windows-1252, which is what servers that send them use.
CP1252_LABELS = frozenset({"iso-8859-1", "iso8859-1", "latin-1", "latin1", "us-ascii", "ascii"})
_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE
)


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    timeout_s: float
    max_redirects: int


@dataclass
class Page:
    """A fetched body with what is needed to decode, extract and cache it."""

    url: str  # after redirects
    kind: Literal["html", "text"]
    body: bytes
    charset: str | None  # from the Content-Type header
    etag: str | None = None
    last_modified: str | None = None
    cache_control: str = ""

    def text(self) -> str:
        return decode(self.body, self.charset, html=self.kind == "html")


def _fail(message: str, url: str, reason: str) -> errors.FetchFailed:
    return errors.FetchFailed(message, url=url, reason=reason)


def check_url(url: str) -> httpx2.URL:
    """The URL parsed, or FetchFailed: only http(s) URLs with a host are fetched."""
    import httpx2

    try:
        parsed = httpx2.URL(url.strip())
    except (httpx2.InvalidURL, TypeError, ValueError) as e:
        raise _fail(f"not a valid URL: {e}", url, "bad_url") from None
    if parsed.scheme not in ("http", "https"):
        what = f"{parsed.scheme}: URLs" if parsed.scheme else "URLs without http:// or https://"
        raise _fail(f"only http and https pages can be summarized, not {what}", url, "not_http")
    if not parsed.host:
        raise _fail("the URL has no host", url, "bad_url")
    return parsed


async def fetch(
    url: str, limits: Limits, *, etag: str | None = None, last_modified: str | None = None
) -> Page | None:
    """GET ``url`` within ``limits``; None when a conditional GET says 304 Not Modified."""
    import httpx2

    current = check_url(url)
    step = min(STEP_TIMEOUT_S, limits.timeout_s)
    validators = (("If-None-Match", etag), ("If-Modified-Since", last_modified))
    conditional = {k: v for k, v in validators if v}
    try:
        async with (
            asyncio.timeout(limits.timeout_s),
            httpx2.AsyncClient(
                timeout=httpx2.Timeout(step),
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
            ) as client,
        ):
            for _ in range(limits.max_redirects + 1):
                async with client.stream("GET", current, headers=conditional) as resp:
                    if resp.status_code in REDIRECTS and "location" in resp.headers:
                        try:
                            target = resp.url.join(resp.headers["location"])
                        except httpx2.InvalidURL as e:
                            msg = f"redirected to an invalid URL: {e}"
                            raise _fail(msg, url, "bad_url") from None
                        if target.scheme not in ("http", "https"):
                            msg = f"redirected to a {target.scheme}: URL, which is not http(s)"
                            raise _fail(msg, url, "not_http")
                        current = target
                        continue
                    if resp.status_code == 304 and conditional:
                        return None
                    return await _read(resp, url, limits)
            raise _fail(f"more than {limits.max_redirects} redirects", url, "too_many_redirects")
    except TimeoutError:
        msg = f"the page did not arrive within {limits.timeout_s:g} s"
        raise _fail(msg, url, "timeout") from None
    except httpx2.TimeoutException as e:
        msg = f"the server did not answer in time ({type(e).__name__})"
        raise _fail(msg, url, "timeout") from None
    except httpx2.ConnectError as e:
        raise _fail(
            f"cannot connect to {current.host}: {str(e) or type(e).__name__}", url, "unreachable"
        ) from None
    except (httpx2.InvalidURL, httpx2.UnsupportedProtocol) as e:
        raise _fail(f"not a fetchable URL: {e}", url, "bad_url") from None
    except httpx2.HTTPError as e:  # a broken connection or a malformed answer
        raise _fail(
            f"the download from {current.host} failed: {type(e).__name__}: {e}", url, "unreachable"
        ) from None


async def _read(resp: httpx2.Response, url: str, limits: Limits) -> Page:
    """Check status and type before reading; read at most ``limits.max_bytes``."""
    status = resp.status_code
    if not 200 <= status < 300:
        msg = f"the server answered {status} {resp.reason_phrase}".rstrip()
        raise _fail(msg, url, f"status_{status}")
    raw_type = resp.headers.get("content-type", "")
    mime = raw_type.split(";", 1)[0].strip().lower()
    charset = m.group(1) if (m := _CHARSET.search(raw_type)) else None
    if mime in HTML_TYPES:
        kind: Literal["html", "text"] = "html"
    elif mime in TEXT_TYPES:
        kind = "text"
    else:
        got = f"'{mime}'" if mime else "no Content-Type"
        msg = f"cannot summarize {got}: only HTML and plain text pages"
        raise _fail(msg, url, "unsupported_type")
    cap = limits.max_bytes
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise _fail(f"the page is {int(declared):,} bytes; the limit is {cap:,}", url, "too_large")
    body = bytearray()
    since, mark = time.monotonic(), 0
    async for part in resp.aiter_bytes():
        body += part
        if len(body) > cap:
            raise _fail(f"the page is larger than the limit of {cap:,} bytes", url, "too_large")
        if (now := time.monotonic()) - since >= LOW_SPEED_S:
            if len(body) - mark < LOW_SPEED_BPS * (now - since):
                msg = f"the page arrived at under {LOW_SPEED_BPS} bytes/s for {now - since:.0f} s"
                raise _fail(msg, url, "timeout")
            since, mark = now, len(body)
    head = bytes(body[:4096])
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff")) or "utf-16" in (charset or "").lower()
    if b"\x00" in head and not utf16:
        raise _fail(f"the body is binary data, though labelled {mime}", url, "unsupported_type")
    cc = resp.headers.get("cache-control", "").lower()
    return Page(
        str(resp.url),
        kind,
        bytes(body),
        charset,
        resp.headers.get("etag"),
        resp.headers.get("last-modified"),
        cc,
    )


def _codec(label: str | None) -> str | None:
    """A Python codec for a charset label, or None when the label is unknown."""
    if not label:
        return None
    label = label.strip().lower()
    if label in CP1252_LABELS:
        return "cp1252"
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode(body: bytes, charset: str | None, *, html: bool) -> str:
    """Text from bytes: BOM, then the header's charset, then (HTML) a ``<meta>``
    charset, then UTF-8, then a detector's guess, then windows-1252."""
    for bom, name in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if body.startswith(bom):
            return body.decode(name, errors="replace")
    declared = _codec(charset)
    if declared is None and html and (m := _META_CHARSET.search(body[:8192])):
        declared = _codec(m.group(1).decode("ascii", "replace"))
    if declared is not None:
        return body.decode(declared, errors="replace")
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


# -- extraction ----------------------------------------------------------------------

_ANCHORS = re.compile(r"[ \t]*¶[ \t]*$", re.MULTILINE)  # Sphinx's heading anchors


def extract(page: Page) -> tuple[str | None, str]:
    """(title, main text) of a fetched page; HTML goes through trafilatura, as markdown
    so that paragraphs stay apart. Blocking: run it in a thread."""
    text = page.text()
    if page.kind == "text":
        return _name(page.url), text.strip()
    import trafilatura

    try:
        doc = trafilatura.bare_extraction(
            text, url=page.url, with_metadata=True, include_formatting=True, include_comments=False
        )
    except Exception as e:  # lxml and trafilatura raise many kinds on hostile markup
        msg = f"the page could not be parsed: {type(e).__name__}"
        raise _fail(msg, page.url, "no_text") from None
    if doc is None:
        return _name(page.url), ""
    found = doc if isinstance(doc, dict) else {"title": doc.title, "text": doc.text}
    title = _ANCHORS.sub("", found.get("title") or "").strip() or _name(page.url)
    return title, _ANCHORS.sub("", found.get("text") or "").strip()


def _name(url: str) -> str | None:
    """A title for a page that has none: the last part of its path, or its host."""
    import httpx2

    u = httpx2.URL(url)
    return u.path.rstrip("/").rsplit("/", 1)[-1] or u.host or None


# -- the cache of extracted text -----------------------------------------------------


@dataclass
class Entry:
    url: str
    final_url: str
    title: str | None
    text: str
    etag: str | None
    last_modified: str | None
    stored_at: float
    fresh_s: float  # reused without a request for this long; 0: always revalidate

    def fresh(self) -> bool:
        return time.time() - self.stored_at < self.fresh_s


def freshness(page: Page) -> float | None:
    """Seconds the page may be reused without asking; None: do not store it."""
    cc = page.cache_control
    if "no-store" in cc:
        return None
    if "no-cache" in cc:
        return 0.0
    if m := re.search(r"max-age\s*=\s*(\d+)", cc):
        return float(m.group(1))
    return 0.0 if (page.etag or page.last_modified) else DEFAULT_FRESH_S


class PageCache:
    """Extracted pages as JSON files named by the URL's hash, at most ``MAX_ENTRIES`` of
    them (the least recently stored go first). Blocking: call it in a thread. A cache
    that cannot be written is only logged: the summary does not need it."""

    MAX_ENTRIES = 256

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, url: str) -> Path:
        return self.folder / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")

    def get(self, url: str) -> Entry | None:
        try:
            data = json.loads(self._path(url).read_text(encoding="utf-8"))
            entry = Entry(**data)
        except (OSError, ValueError, TypeError):
            return None
        return entry if entry.url == url else None

    def put(self, entry: Entry) -> None:
        """Store ``entry``, fresh from now (also: the server said it is unchanged)."""
        entry.stored_at = time.time()
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(entry), f, ensure_ascii=False)
            Path(tmp).replace(self._path(entry.url))
            files = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
            for old in files[: max(0, len(files) - self.MAX_ENTRIES)]:
                old.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot write the page cache in %s: %s", self.folder, e)
