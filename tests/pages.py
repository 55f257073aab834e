"""A loopback web server for the summarizer's tests and benchmark: real pages and hostile ones.

Real pages are Debian's ``python3.11-doc`` HTML, which nobody here wrote:

- ``/doc/<path>``    the file, with ETag and Last-Modified; a matching conditional GET
                     gets 304 Not Modified
- ``/fresh/<path>``  the same file with no validators at all
- ``/redirect/<n>``  n redirects, then ``library/bisect.html``

Hostile ones: ``/huge`` (an endless fast body, no length), ``/huge-declared`` (a
50 MB Content-Length), ``/drip`` (one byte every ``drip_s``, forever), ``/silent`` (no
answer at all), ``/loop`` (a
redirect to itself), ``/to-ftp`` (a redirect to ``ftp:``), ``/pdf``, ``/png``,
``/binary`` (random bytes labelled text/html), ``/empty``, ``/notext`` (markup with no
text), ``/sjis`` (Shift_JIS named in the header), ``/sjis-meta`` (named only in a
``<meta>``), ``/latin1`` (text/plain; charset=iso-8859-1), ``/plain`` and
``/status/<code>``.

Attacks on the reader: ``/bomb`` (2 GiB of HTML gzipped twice, ``Content-Encoding:
gzip, gzip``, 5 KB on the wire), ``/bomb-br`` (``Content-Encoding: br``, which
was not asked for), ``/bomb-deep`` (six stacked gzip layers), ``/gz/<path>`` (a doc
page gzipped, as servers send it), ``/charset/<label>`` (a short article labelled
with that charset in the header; ``/charset/punycode`` ends in 3 MB that Python's
quadratic punycode decoder would take many minutes over), ``/meta/<label>`` (the
label in a ``<meta charset>`` only), ``/slow-extract`` (3 MB of ``<span>`` that keeps
trafilatura busy for half a minute or more), ``/huge-header`` (a 200 KB header line)
and ``/to?<url>`` (a redirect to any URL).

Every request is logged in ``hits`` as (path, status, request headers). Standard library
only; one thread per connection, so a drip never blocks the other pages.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import random
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, Self
from urllib.parse import unquote

DOC_ROOT = Path("/usr/share/doc/python3.11/html")
ENDLESS_S = 120.0  # an endless body still ends: bounded in time, whoever reads it

JAPANESE = (
    "<html><head><title>日本語のページ</title>{meta}</head><body><article>"
    "<h1>日本語のページ</h1>"
    "<p>吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。</p>"
    "<p>何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。</p>"
    "<p>吾輩はここで始めて人間というものを見た。しかもあとで聞くとそれは書生という"
    "人間中で一番獰悪な種族であったそうだ。</p>"
    "</article></body></html>"
)
LATIN1 = (
    "Café crème à la française.\n\nDéjà vu: the naïve façade of a résumé, "
    "written in ISO-8859-1 and labelled so.\n"
)
ARTICLE = (
    "<html><head><title>A page about charsets</title>{meta}</head><body><article>"
    "<h1>A page about charsets</h1>"
    "<p>Plain + words of one paragraph, which any reader should find and keep.</p>"
    "<p>A second paragraph: the label on this page is not one a browser knows.</p>"
    "</article>{tail}</body></html>"
)
NO_TEXT = (
    "<html><head><script>var a = 1;</script><style>p { color: red }</style></head>"
    "<body><div><img src='a.png'></div><div></div></body></html>"
)


@functools.cache
def bomb(size: int = 2 << 30) -> bytes:
    """``size`` bytes of HTML, gzipped, then gzipped again: a few KB. Each MiB is
    compressed after a full flush, so its compressed form is the same every time and
    is built once (the CRC is the only part that needs all the bytes)."""
    block = b"<p>" + b"a" * ((1 << 20) - 8) + b"</p>\n"
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    again = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    end = z.flush()[:-8]  # the final empty block, without the trailer
    n = size >> 20
    crc = functools.reduce(lambda c, _: zlib.crc32(block, c), range(n), 0)
    inner = first + again * (n - 1) + end + struct.pack("<II", crc, (n << 20) & 0xFFFFFFFF)
    return gzip.compress(inner, 9)


def localhost_tls(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for ``localhost`` (its PEM path, for clients to trust)
    and a server TLS context that presents it, for ``Pages(tls=...)``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    return cert, tls


class Hit(NamedTuple):
    path: str
    status: int
    headers: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the hits log is the record

    def _log(self, status: int) -> None:
        self.server.pages.hits.append(
            Hit(self.path, status, {k.lower(): v for k, v in self.headers.items()})
        )

    def _send(
        self, status: int, ctype: str | None, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self._log(status)
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, ctype: str, piece: bytes, pause: float, length: int | None = None) -> None:
        """Write ``piece`` again and again until the client leaves or ENDLESS_S passes."""
        self._log(200)
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        end = time.monotonic() + ENDLESS_S
        try:
            self.wfile.write(b"<html><body>")
            while time.monotonic() < end:
                self.wfile.write(piece)
                self.wfile.flush()
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # the client gave up, as it should

    def _redirect(self, location: str) -> None:
        self._send(302, "text/html", b"moved", {"Location": location})

    def _doc(self, rel: str, validators: bool) -> None:
        path = (DOC_ROOT / rel).resolve()
        if not path.is_relative_to(DOC_ROOT) or not path.is_file():
            self._send(404, "text/html", b"<p>no such page</p>")
            return
        st = path.stat()
        if not validators:
            self._send(200, "text/html; charset=utf-8", path.read_bytes())
            return
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        headers = {"ETag": etag, "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
        if self.headers.get("If-None-Match") == etag:
            self._send(304, None, b"", headers)
            return
        self._send(200, "text/html; charset=utf-8", path.read_bytes(), headers)

    def do_GET(self) -> None:
        p = self.path.split("?", 1)[0]
        drip = self.server.pages.drip_s
        if p.startswith("/doc/"):
            self._doc(p[len("/doc/") :], validators=True)
        elif p.startswith("/fresh/"):
            self._doc(p[len("/fresh/") :], validators=False)
        elif p.startswith("/redirect/") and p[len("/redirect/") :].isdigit():
            n = int(p[len("/redirect/") :])
            if n:
                self._redirect(f"/redirect/{n - 1}")
            else:
                self._doc("library/bisect.html", validators=False)
        elif p.startswith("/status/") and p[len("/status/") :].isdigit():
            code = int(p[len("/status/") :])
            self._send(code, "text/html", f"<p>status {code}</p>".encode())
        elif p == "/huge":
            self._stream("text/html", b"<p>" + b"lorem ipsum dolor " * 3600 + b"</p>\n", 0)
        elif p == "/huge-declared":
            self._stream("text/html", b"<p>big</p>" * 1000, 0.01, length=50_000_000)
        elif p == "/drip":
            self._stream("text/html; charset=utf-8", b"a", drip)
        elif p == "/silent":  # accepts the request and never answers
            self._log(0)
            time.sleep(ENDLESS_S)
            self.close_connection = True
        elif p == "/loop":
            self._redirect("/loop")
        elif p == "/to-ftp":
            self._redirect("ftp://127.0.0.1/pub/page.html")
        elif p == "/pdf":
            self._send(
                200, "application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
            )
        elif p == "/png":
            self._send(200, "image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
        elif p == "/binary":
            noise = random.Random(4).randbytes(20_000)
            self._send(200, "text/html", noise)
        elif p == "/empty":
            self._send(200, "text/html; charset=utf-8", b"")
        elif p == "/notext":
            self._send(200, "text/html; charset=utf-8", NO_TEXT.encode())
        elif p == "/sjis":
            self._send(
                200, "text/html; charset=Shift_JIS", JAPANESE.format(meta="").encode("shift_jis")
            )
        elif p == "/sjis-meta":
            body = JAPANESE.format(meta='<meta charset="shift_jis">').encode("shift_jis")
            self._send(200, "text/html", body)
        elif p == "/latin1":
            self._send(200, "text/plain; charset=iso-8859-1", LATIN1.encode("latin-1"))
        elif p == "/plain":
            self._send(200, "text/plain", LATIN1.encode())
        elif p == "/bomb":
            self._send(200, "text/html", bomb(), {"Content-Encoding": "gzip, gzip"})
        elif p == "/bomb-br":  # not brotli at all: a reader that asked for none must refuse
            self._send(
                200, "text/html", random.Random(5).randbytes(4096), {"Content-Encoding": "br"}
            )
        elif p == "/bomb-deep":
            body = b"<p>six layers</p>"
            for _ in range(6):
                body = gzip.compress(body)
            self._send(200, "text/html", body, {"Content-Encoding": ", ".join(["gzip"] * 6)})
        elif p.startswith("/gz/"):
            page = (DOC_ROOT / p[len("/gz/") :]).resolve()
            if page.is_relative_to(DOC_ROOT) and page.is_file():
                body = gzip.compress(page.read_bytes())
                headers = {"Content-Encoding": "gzip"}
                self._send(200, "text/html; charset=utf-8", body, headers)
            else:
                self._send(404, "text/html", b"<p>no such page</p>")
        elif p.startswith("/charset/"):
            label = unquote(p[len("/charset/") :])
            # After the last "-", 3 MB of a valid punycode digit: each is one insertion.
            tail = '<script>var x = "-' + "a" * 3_000_000 if label == "punycode" else ""
            body = ARTICLE.format(meta="", tail=tail).encode()
            self._send(200, f"text/html; charset={label}", body)
        elif p.startswith("/meta/"):
            label = unquote(p[len("/meta/") :])
            body = ARTICLE.format(meta=f'<meta charset="{label}">', tail="").encode()
            self._send(200, "text/html", body)
        elif p == "/slow-extract":
            body = "<html><body><div>" + "<span>w</span> " * 200_000 + "</div></body></html>"
            self._send(200, "text/html; charset=utf-8", body.encode())
        elif p == "/huge-header":  # one 200 KB header line
            self._send(200, "text/html", b"<p>big header</p>", {"X-Filler": "a" * 200_000})
        elif p == "/to":
            self._redirect(unquote(self.path.split("?", 1)[1]) if "?" in self.path else "/")
        else:
            self._send(404, "text/html", b"<p>not found</p>")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    pages: Pages

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up is fine
            super().handle_error(request, client_address)


class Pages:
    """The page server on 127.0.0.1 (or ``host``; https with a ``tls`` context), in a
    thread; ``with Pages() as pages: pages.url("/pdf")``."""

    def __init__(
        self, drip_s: float = 0.2, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        assert DOC_ROOT.is_dir(), f"{DOC_ROOT} is missing: apt-get install -y python3.11-doc"
        self.drip_s = drip_s
        self.host = host
        self.tls = tls  # serve https with this server context
        self.hits: list[Hit] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        assert self._server is not None, "not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str, status: int | None = None) -> int:
        """How many requests for ``path`` (with that status) arrived."""
        return sum(1 for h in self.hits if h.path == path and status in (None, h.status))

    def start(self) -> Self:
        self._server = _Server((self.host, 0), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._server.pages = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pages", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
