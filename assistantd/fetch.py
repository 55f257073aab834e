"""Fetching a page for ``summarize/url``: http(s) only, bounded in size and time, and
kept from redirecting into the user's machine or network.

Redirects are followed by hand, so every hop's scheme is checked (a redirect to
``ftp:`` or ``file:`` is refused) and counted. Every hop's host is resolved (on a
thread, never on the event loop) and the request goes to an address that was
checked, with the name in ``Host`` and in TLS's SNI and certificate check: DNS
cannot answer differently between the check and the connection. The URL the user
names may be anywhere (a docs server on this machine is a real use); a redirect, or
a later hop's DNS answer, may not move inwards: from a public address to a private,
link-local or loopback one, from the LAN to this machine (``reach``). The config's
``[summarize] allow_private_redirects`` lifts that rule. Pages go through the config's
``[network] proxy`` (except to its ``no_proxy`` hosts), never through one named in the
environment; through a proxy too the request names the checked address (an http
request's absolute URL, an https tunnel's CONNECT), so the proxy resolves nothing.
``SSL_CERT_FILE``, ``SSL_CERT_DIR`` and ``[network] ca_bundle`` name the certificates
to trust.

The body is read as a stream and decompressed in bounded pieces (gzip and deflate,
stacked at most five deep; no other coding is asked for or accepted): a huge,
endless or decompression-bomb body is cut at the size cap, a slow drip at the total
deadline. Every failure is one ``errors.FetchFailed`` whose ``reason`` a client can
act on: not_http, bad_url, too_large, timeout, status_<code>, unsupported_type,
bad_encoding, too_many_redirects, private_address, unreachable (and, from reading
the text in ``extract``, no_text and bad_charset).

``PageCache`` keeps extracted text by URL with the validators (ETag, Last-Modified)
the server gave, so a second summary of a page costs at most a conditional GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from assistantd import __version__, errors
from assistantd.extract import UTF16, codec_for
from assistantd.network import BadNetworkConfig, Network

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger("assistantd.fetch")

USER_AGENT = f"assistantd/{__version__} (page summarizer; +python-httpx2)"
ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"
ACCEPT_ENCODING = "gzip, deflate"  # decoded in bounded pieces; brotli is not installed
CODINGS = frozenset({"identity", "gzip", "deflate"})
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
STEP_TIMEOUT_S = 10.0  # connect, and each read; the whole fetch has its own deadline
# curl's --speed-limit/--speed-time: a body slower than this over that long is given up
# on (a slow drip defeats the read timeout, and the total deadline may be long).
LOW_SPEED_BPS, LOW_SPEED_S = 1024, 5.0
DEFAULT_FRESH_S = 600.0  # how long a page with no validators is reused without asking
_HOST = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")  # after IDNA: letters, digits
_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)

# Where an address is, from the outside in. A redirect may not go further in.
Reach = Literal["global", "private", "link_local", "loopback"]
DEPTH: dict[Reach, int] = {"global": 0, "private": 1, "link_local": 2, "loopback": 3}
WHERE: dict[Reach, str] = {
    "global": "a public address",
    "private": "an address on a private network",
    "link_local": "a link-local address",
    "loopback": "an address on this machine",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    timeout_s: float
    max_redirects: int
    allow_private_redirects: bool = False


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
    host = parsed.raw_host.decode("ascii")
    if not _HOST.fullmatch(host) and not _is_ip(host):
        raise _fail(f"not a valid URL: {host!r} is not a host name", url, "bad_url")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise _fail(f"not a valid URL: port {parsed.port} is out of range", url, "bad_url")
    return parsed


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- where an address is -----------------------------------------------------------------


def classify(address: str) -> Reach:
    """Where one IP address is: this machine, the link, a private network, or public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope ("%eth0") aside
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:  # 0.0.0.0 and :: reach this machine
        return "loopback"
    if ip.is_link_local:  # 169.254.0.0/16 (cloud metadata servers), fe80::/10
        return "link_local"
    if ip.is_global:
        return "global"
    return "private"  # RFC 1918, ULA, CGNAT, and other ranges that are not public


def reach(addresses: list[str]) -> Reach:
    """Where a host is: the innermost of its addresses."""
    return max((classify(a) for a in addresses), key=DEPTH.__getitem__)


def redirect_allowed(before: Reach, after: Reach) -> bool:
    """A redirect may stay where it is or move outwards, never inwards."""
    return DEPTH[after] <= DEPTH[before]


def _off_loop(call: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``call`` in a daemon thread: a resolver that hangs can neither block the
    daemon's exit (``asyncio.run`` joins the loop's executor) nor hold a pool's thread."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)  # type: ignore[arg-type]

    def run() -> None:
        value: T | None = None
        error: BaseException | None = None
        try:
            value = call()
        except BaseException as e:
            error = e
        with contextlib.suppress(RuntimeError):  # the loop may be gone by now
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="resolve", daemon=True).start()
    return fut


async def resolve(url: httpx2.URL, original: str) -> list[str]:
    """The addresses of ``url``'s host, in the resolver's order of preference."""
    host = url.raw_host.decode("ascii")
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await _off_loop(lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except UnicodeError as e:  # a label the IDNA codec refuses (too long, empty)
        raise _fail(f"not a valid host name: {host}: {e}", original, "bad_url") from None
    except OSError as e:
        msg = f"cannot find the address of {host}: {e.strerror or e}"
        raise _fail(msg, original, "unreachable") from None
    found = [str(info[4][0]) for info in infos]
    return list(dict.fromkeys(found))


def _pinned(url: httpx2.URL, address: str) -> tuple[httpx2.URL, dict[str, str], dict[str, str]]:
    """``url`` sent to ``address``: the URL with the address as host, and the name in
    the Host header and (https) in SNI, where the certificate is checked against it."""
    host = url.raw_host.decode("ascii")
    shown = f"[{host}]" if ":" in host else host
    headers = {"Host": shown + (f":{url.port}" if url.port is not None else "")}
    ext = {"sni_hostname": host} if url.scheme == "https" else {}
    return url.copy_with(host=address.split("%", 1)[0]), headers, ext


async def fetch(
    url: str,
    limits: Limits,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    network: Network | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> Page | None:
    """GET ``url`` within ``limits`` (through ``network``'s proxy, if it names one); None
    when a conditional GET says 304 Not Modified. ``transport`` replaces the network's
    (a seam for tests, e.g. ``httpx2.MockTransport``); None, the daemon's case, uses it."""
    import httpx2

    current = check_url(url)
    net = network or Network()
    step = min(STEP_TIMEOUT_S, limits.timeout_s)
    try:
        verify = net.ssl_context()
    except BadNetworkConfig as e:
        raise _fail(str(e), url, "unreachable") from None
    # No proxy from the environment (trust_env=False); SSL_CERT_* still count (verify).
    if transport is None:
        transport = net.transport(verify) if net.proxy else httpx2.AsyncHTTPTransport(verify=verify)
    validators = (("If-None-Match", etag), ("If-Modified-Since", last_modified))
    conditional = {k: v for k, v in validators if v}
    where: Reach | None = None
    try:
        async with (
            asyncio.timeout(limits.timeout_s),
            httpx2.AsyncClient(
                timeout=httpx2.Timeout(step, connect=min(net.connect_timeout_s, step)),
                follow_redirects=False,
                trust_env=False,
                transport=transport,
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": ACCEPT,
                    "Accept-Encoding": ACCEPT_ENCODING,
                },
            ) as client,
        ):
            for _ in range(limits.max_redirects + 1):
                addresses = await resolve(current, url)
                now = reach(addresses)
                if (
                    where is not None
                    and not limits.allow_private_redirects
                    and not redirect_allowed(where, now)
                ):
                    raise _fail(
                        f"the page redirected from {WHERE[where]} to {current.host}, "
                        f"{WHERE[now]}: refused (the config's [summarize] "
                        "allow_private_redirects = true allows it)",
                        url,
                        "private_address",
                    )
                where = now
                resp = await _send(client, current, addresses, conditional)
                try:
                    if resp.status_code in REDIRECTS and "location" in resp.headers:
                        current = _target(current, resp.headers["location"], url)
                        continue
                    if resp.status_code == 304 and conditional:
                        return None
                    return await _read(resp, current, url, limits)
                finally:
                    await resp.aclose()
            raise _fail(f"more than {limits.max_redirects} redirects", url, "too_many_redirects")
    except errors.FetchFailed:
        raise
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
    except httpx2.DecodingError as e:
        msg = f"the page's compressed body cannot be decoded: {e}"
        raise _fail(msg, url, "bad_encoding") from None
    except (httpx2.InvalidURL, httpx2.UnsupportedProtocol) as e:
        raise _fail(f"not a fetchable URL: {e}", url, "bad_url") from None
    except httpx2.HTTPError as e:  # a broken connection or a malformed answer
        raise _fail(
            f"the download from {current.host} failed: {type(e).__name__}: {e}", url, "unreachable"
        ) from None
    except (OSError, ValueError) as e:  # what the layers below let through
        log.warning("fetching %s failed", url, exc_info=True)
        raise _fail(
            f"the download from {current.host} failed: {type(e).__name__}: {e}", url, "unreachable"
        ) from None


async def _send(
    client: httpx2.AsyncClient,
    url: httpx2.URL,
    addresses: list[str],
    headers: dict[str, str],
) -> httpx2.Response:
    """The response (streaming) from the first of ``addresses`` that accepts a connection."""
    import httpx2

    failure: httpx2.ConnectError | None = None
    for address in addresses:
        target, host, ext = _pinned(url, address)
        request = client.build_request("GET", target, headers=headers | host, extensions=ext)
        try:
            return await client.send(request, stream=True)
        except httpx2.ConnectError as e:
            failure = e
    assert failure is not None, "resolve() returns at least one address"
    raise failure


def _target(current: httpx2.URL, location: str, url: str) -> httpx2.URL:
    """Where a redirect points, if it is an http(s) URL that can be fetched."""
    import httpx2

    try:
        target = current.join(location)
    except (httpx2.InvalidURL, ValueError, TypeError) as e:
        raise _fail(f"redirected to an invalid URL: {e}", url, "bad_url") from None
    if target.scheme not in ("http", "https"):
        msg = f"redirected to a {target.scheme}: URL, which is not http(s)"
        raise _fail(msg, url, "not_http")
    try:
        return check_url(str(target))
    except errors.FetchFailed as e:
        raise _fail(f"redirected to {target}: {e.message}", url, "bad_url") from None


async def _read(resp: httpx2.Response, current: httpx2.URL, url: str, limits: Limits) -> Page:
    """Check status, type and coding before reading; read at most ``limits.max_bytes``."""
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
    codings = [
        c.strip().lower()
        for v in resp.headers.get_list("content-encoding")
        for c in v.split(",")
        if c.strip()
    ]
    if unknown := [c for c in codings if c not in CODINGS]:
        msg = f"the page is compressed as {', '.join(unknown)}, which was not asked for"
        raise _fail(msg, url, "bad_encoding")
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
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff")) or codec_for(charset) in UTF16
    if b"\x00" in head and not utf16:
        raise _fail(f"the body is binary data, though labelled {mime}", url, "unsupported_type")
    cc = resp.headers.get("cache-control", "").lower()
    return Page(
        str(current),
        kind,
        bytes(body),
        charset,
        resp.headers.get("etag"),
        resp.headers.get("last-modified"),
        cc,
    )


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
