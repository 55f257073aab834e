"""Pages written to hurt the reader, through a real daemon and a real page server:
decompression bombs, charset labels that are not text encodings, HTML that keeps the
extractor busy, redirects into the user's machine or network, and URLs that break the
layers below. Each ends in -32006 with a reason, or in a summary, never in -32603."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from assistantd.client import RpcError
from assistantd.extract import LABELS, RefusedCharset, codec_for, decode
from assistantd.fetch import classify, reach, redirect_allowed
from tests.conftest import Daemon, fake_provider_config
from tests.pages import Pages, localhost_tls
from tests.upstream import Upstream

CONFIG_4K = '[models."fake-4k"]\ncontext_window = 4096\n'
SMALL_PAGE = "/doc/library/bisect.html"
T = TypeVar("T")


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    with Pages() as server:
        yield server


def config(upstream: Upstream, summarize: str = "") -> str:
    return fake_provider_config(upstream, extra=CONFIG_4K + "[summarize]\n" + summarize)


@pytest.fixture
def sd(make_daemon: Any, upstream: Upstream) -> Daemon:
    d: Daemon = make_daemon(config(upstream, "timeout_s = 10\n"))
    return d


def fetch_error(d: Daemon, url: str) -> RpcError:
    with pytest.raises(RpcError) as err:
        d.call("summarize/url", {"url": url, "model": "fake-4k"})
    return err.value


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` figure in kB (VmHWM: the peak resident set)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def workers(d: Daemon) -> set[int]:
    """The pids of the daemon's extraction workers."""
    found = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == d.proc.pid and b"assistantd.extract" in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def poll(what: Callable[[], T], timeout: float = 30.0) -> T:
    """``what()`` once it is truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)
    return value


# -- decompression bombs -----------------------------------------------------------------


def test_decompression_bombs_are_refused(sd: Daemon, pages: Pages) -> None:
    """2 GiB gzipped twice is cut at the size cap with the daemon's peak memory far below
    it; a coding that was not asked for (br) or six stacked layers are bad_encoding; a
    plainly gzipped page is read."""
    start = time.monotonic()
    e = fetch_error(sd, pages.url("/bomb"))
    took = time.monotonic() - start
    peak_mb = status_kb(sd.proc.pid, "VmHWM") / 1024
    print(f"bomb: {took:.2f} s to the error, daemon peak RSS {peak_mb:.0f} MB")
    assert (e.code, e.data["reason"]) == (-32006, "too_large") and "limit" in e.message
    assert peak_mb < 400  # the body is 2,048 MB decoded; the cap is 10 MB
    bomb = [h for h in pages.hits if h.path == "/bomb"][-1]
    assert bomb.headers["accept-encoding"] == "gzip, deflate"
    for path, word in (("/bomb-br", "br"), ("/bomb-deep", "5")):
        e = fetch_error(sd, pages.url(path))
        assert (e.code, e.data["reason"]) == (-32006, "bad_encoding"), (path, e.message)
        assert word in e.message
    r = sd.call("summarize/url", {"url": pages.url("/gz/library/bisect.html"), "model": "fake-4k"})
    assert r["title"].startswith("bisect") and r["chars"] > 1000


# -- charsets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "label", ["rot13", "zlib", "base64", "hex", "bz2", "uu", "idna", "utf-7", "punycode"]
)
def test_labels_that_are_not_whatwg_encodings_are_ignored(
    sd: Daemon, pages: Pages, label: str
) -> None:
    """A charset label outside the WHATWG Encoding Standard (Python transforms, punycode
    on 3 MB) is ignored as a browser ignores it: the page is read as UTF-8, at once."""
    start = time.monotonic()
    r = sd.call(
        "summarize/url",
        {"url": pages.url(f"/charset/{label}"), "model": "fake-4k", "stream": False},
    )
    assert time.monotonic() - start < 60  # punycode's own decoder: many minutes
    assert "Plain + words of one paragraph" in r["text"]  # "+ " is not UTF-7
    assert r["title"] == "A page about charsets"


@pytest.mark.parametrize("label", ["rot13", "base64", "punycode", "utf-16le"])
def test_meta_charset_labels(sd: Daemon, pages: Pages, label: str) -> None:
    """A <meta charset> that names a non-WHATWG label (or UTF-16, which an ASCII-readable
    <meta> cannot be) leaves the page read as UTF-8."""
    r = sd.call(
        "summarize/url", {"url": pages.url(f"/meta/{label}"), "model": "fake-4k", "stream": False}
    )
    assert "Plain + words of one paragraph" in r["text"]


def test_replacement_encodings_are_bad_charset(sd: Daemon, pages: Pages) -> None:
    """ISO-2022-KR and the other labels browsers refuse to decode give -32006 bad_charset."""
    e = fetch_error(sd, pages.url("/charset/iso-2022-kr"))
    assert (e.code, e.data["reason"]) == (-32006, "bad_charset") and "iso-2022-kr" in e.message


def test_whatwg_label_table() -> None:
    """Every label maps to a codec Python has, and the labels mean what WHATWG says."""
    import codecs

    for codec in set(LABELS.values()) - {"replacement", "x-user-defined"}:
        assert codecs.lookup(codec)._is_text_encoding  # type: ignore[attr-defined]
    assert codec_for(" Latin1 ") == codec_for("ISO-8859-1") == codec_for("ascii") == "cp1252"
    assert codec_for("unicode") == "utf-16-le" and codec_for("gbk") == "gb18030"
    assert codec_for("rot13") is None and codec_for("punycode") is None
    assert decode(b"caf\xe9 \x80", "iso-8859-1", html=False) == "café €"
    assert decode("ok".encode("utf-16-le"), "utf-16le", html=False) == "ok"
    assert decode(b"a\x80\xff", "x-user-defined", html=False) == "a\uf780\uf7ff"
    assert decode("été".encode(), "rot13", html=False) == "été"  # ignored: read as UTF-8
    with pytest.raises(RefusedCharset):
        decode(b"abc", "hz-gb-2312", html=True)


# -- extraction in a worker process ------------------------------------------------------


def test_extraction_deadline_kills_the_worker(make_daemon: Any, upstream: Upstream) -> None:
    """Past extract_timeout_s the extraction ends with -32006 timeout, its worker process
    is killed, and the next page gets a fresh worker."""
    d = make_daemon(config(upstream, "extract_timeout_s = 3\n"))
    with Pages() as pages:
        warm = d.call("summarize/url", {"url": pages.url(SMALL_PAGE), "model": "fake-4k"})
        assert warm["title"].startswith("bisect")
        (first,) = workers(d)  # a worker is kept for the next page
        start = time.monotonic()
        e = fetch_error(d, pages.url("/slow-extract"))
        took = time.monotonic() - start
        assert (e.code, e.data["reason"]) == (-32006, "timeout"), e.message
        assert "3 s" in e.message and took < 25, took  # the page alone takes 30 s or more
        poll(lambda: not alive(first), 10)
        fresh = pages.url("/fresh/library/bisect.html")  # not in the page cache yet
        again = d.call("summarize/url", {"url": fresh, "model": "fake-4k"})
        assert again["title"] == warm["title"]
        assert workers(d) and first not in workers(d)


def start_slow_extraction(d: Daemon, pages: Pages) -> tuple[threading.Thread, dict[str, Any]]:
    """A summarize/url of /slow-extract on its own connection, in a thread; returns once
    its worker is extracting. ``out`` gets the result or error, and the client."""
    out: dict[str, Any] = {"client": d.client()}

    def run() -> None:
        try:
            out["result"] = out["client"].call(
                "summarize/url", {"url": pages.url("/slow-extract"), "model": "fake-4k"}
            )
        except Exception as e:
            out["error"] = e
        out["done_at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    out["pid"] = next(iter(poll(lambda: workers(d))))
    poll(lambda: pages.count("/slow-extract", 200))
    return thread, out


def test_cancel_ends_the_extraction(sd: Daemon, pages: Pages) -> None:
    """$/cancelRequest during extraction returns the cancelled result at once and kills the
    worker that was reading the page."""
    thread, out = start_slow_extraction(sd, pages)
    asked = time.monotonic()
    out["client"].cancel(1)
    thread.join(30)
    out["client"].close()
    assert out.get("result", {}).get("finish_reason") == "cancelled", out
    assert out["done_at"] - asked < 10  # the page alone takes 30 s or more
    poll(lambda: not alive(out["pid"]), 10)
    assert sd.call("daemon/status")["active_requests"] == 0


def test_shutdown_ends_the_extraction(sd: Daemon, pages: Pages) -> None:
    """daemon/shutdown during extraction exits promptly, and no worker outlives it."""
    thread, out = start_slow_extraction(sd, pages)
    asked = time.monotonic()
    sd.call("daemon/shutdown")
    assert sd.proc.wait(30) == 0
    assert time.monotonic() - asked < 15  # the page alone takes 30 s or more
    thread.join(10)
    out["client"].close()
    poll(lambda: not alive(out["pid"]), 10)


def test_a_killed_daemon_takes_its_worker(sd: Daemon, pages: Pages) -> None:
    """A daemon killed with SIGKILL mid-extraction leaves no worker behind (the kernel's
    parent-death signal ends it)."""
    thread, out = start_slow_extraction(sd, pages)
    sd.proc.kill()
    sd.proc.wait(10)
    poll(lambda: not alive(out["pid"]), 10)
    thread.join(10)
    out["client"].close()


# -- redirects into the user's machine or network ----------------------------------------


def test_address_classes() -> None:
    """Addresses are classed from the outside in, and a redirect may only move outwards."""
    cases = {
        "93.184.215.14": "global",
        "2606:4700::6810:84e5": "global",
        "10.1.2.3": "private",
        "172.16.0.1": "private",
        "192.168.1.1": "private",
        "100.64.0.1": "private",  # carrier-grade NAT
        "fd00::1": "private",
        "169.254.169.254": "link_local",  # cloud metadata
        "fe80::1%eth0": "link_local",
        "127.0.0.1": "loopback",
        "127.8.9.10": "loopback",
        "::1": "loopback",
        "0.0.0.0": "loopback",
        "::ffff:127.0.0.1": "loopback",
        "::ffff:10.0.0.1": "private",
    }
    for address, where in cases.items():
        assert classify(address) == where, address
    assert reach(["93.184.215.14", "127.0.0.1"]) == "loopback"  # the innermost counts
    assert not redirect_allowed("global", "private")
    assert not redirect_allowed("global", "loopback")
    assert not redirect_allowed("global", "link_local")
    assert not redirect_allowed("private", "loopback")
    assert not redirect_allowed("private", "link_local")
    assert redirect_allowed("loopback", "loopback") and redirect_allowed("private", "private")
    assert redirect_allowed("loopback", "global") and redirect_allowed("private", "global")


def test_pinned_request_names_the_host(sd: Daemon, pages: Pages) -> None:
    """A page fetched by name goes to the address that was checked, with the name (and
    port) in the Host header, as the server expects."""
    url = f"http://localhost:{pages.port}/fresh/library/bisect.html"
    r = sd.call("summarize/url", {"url": url, "model": "fake-4k"})
    assert r["url"] == url and r["title"].startswith("bisect")
    hit = [h for h in pages.hits if h.path == "/fresh/library/bisect.html"][-1]
    assert hit.headers["host"] == f"localhost:{pages.port}"


def test_pinned_https_checks_the_name(make_daemon: Any, upstream: Upstream, tmp_path: Path) -> None:
    """Over https the request goes to the checked address while TLS checks the
    certificate against the name: a certificate for localhost serves
    https://localhost:PORT/, and the same server by its address is refused."""
    cert, tls = localhost_tls(tmp_path)
    d = make_daemon(config(upstream, "timeout_s = 10\n"), env={"SSL_CERT_FILE": str(cert)})
    with Pages(tls=tls) as pages:
        url = f"https://localhost:{pages.port}/fresh/library/bisect.html"
        r = d.call("summarize/url", {"url": url, "model": "fake-4k"})
        assert r["url"] == url and r["title"].startswith("bisect")
        assert pages.hits[-1].headers["host"] == f"localhost:{pages.port}"
        e = fetch_error(d, pages.url("/fresh/library/bisect.html"))  # https://127.0.0.1:PORT
        assert (e.code, e.data["reason"]) == (-32006, "unreachable") and "certificate" in e.message


NETNS_ADDR = "10.213.0.1"  # the page server's LAN address, only inside the namespace
LINK_ADDR = "169.254.7.1"
# A public address, held by the namespace's own loopback: what a public page's server
# would have, with no traffic leaving the namespace.
PUBLIC_ADDR = "100.0.0.1"
CLONE_NEWNET = 0x40000000


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of this test's own, with only a loopback interface, which also
    holds a private LAN address, a link-local one and a public one: nothing in it
    reaches anywhere else."""
    name = f"adtest-{os.getpid()}"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    try:
        ip("netns", "add", name)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot make a network namespace (root and iproute2 needed): {e}")
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "addr", "add", f"{NETNS_ADDR}/32", "dev", "lo")
        ip("-n", name, "addr", "add", f"{LINK_ADDR}/32", "dev", "lo")
        ip("-n", name, "addr", "add", f"{PUBLIC_ADDR}/32", "dev", "lo")
        yield name
    finally:
        ip("netns", "delete", name)


def inside(name: str, make: Callable[[], T]) -> T:
    """``make()`` run on a thread that joined the namespace: the sockets it opens, the
    threads it starts and the processes it spawns are all inside."""
    box: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                box["error"] = OSError(ctypes.get_errno(), "setns failed")
                return
        finally:
            os.close(fd)
        try:
            box["value"] = make()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def test_redirects_into_this_machine_or_network(netns: str, make_daemon: Any) -> None:
    """In a namespace of the test's own: a page on a public address that redirects to
    the LAN, this machine or a link-local address, and a LAN page that redirects to
    this machine (by address or by name) or a link-local address, are refused with
    -32006 private_address, the target never asked; a direct 127.0.0.1 URL, a LAN-to-LAN
    and a LAN-to-public redirect work; allow_private_redirects lets them through."""
    pages = inside(netns, lambda: Pages(host="0.0.0.0").start())
    up = inside(netns, lambda: Upstream().start())
    try:
        port = pages.port
        lan, local = f"http://{NETNS_ADDR}:{port}", f"http://127.0.0.1:{port}"

        public = f"http://{PUBLIC_ADDR}:{port}"

        def via(target: str, origin: str = lan) -> str:
            return f"{origin}/to?{quote(target, safe='')}"

        def daemon(summarize: str = "") -> Daemon:
            d: Daemon = inside(
                netns, lambda: make_daemon(config(up, summarize + "timeout_s = 10\n"), wait=False)
            )
            d.wait_ready()
            return d

        d = daemon()
        direct = d.call("summarize/url", {"url": local + SMALL_PAGE, "model": "fake-4k"})
        assert direct["title"].startswith("bisect")
        lan_hop = d.call("summarize/url", {"url": via(lan + SMALL_PAGE), "model": "fake-4k"})
        assert lan_hop["title"].startswith("bisect")
        for origin, target in (
            (public, lan + SMALL_PAGE),
            (public, local + SMALL_PAGE),
            (public, f"http://{LINK_ADDR}:{port}{SMALL_PAGE}"),
            (lan, local + SMALL_PAGE),
            (lan, f"http://localhost:{port}{SMALL_PAGE}"),
            (lan, f"http://{LINK_ADDR}:{port}{SMALL_PAGE}"),
        ):
            before = len(pages.hits)
            e = fetch_error(d, via(target, origin))
            assert (e.code, e.data["reason"]) == (-32006, "private_address"), (target, e.message)
            assert "allow_private_redirects" in e.message
            assert [h.path for h in pages.hits[before:]] == [via(target)[len(lan) :]]
        public_hop = d.call("summarize/url", {"url": via(public + SMALL_PAGE), "model": "fake-4k"})
        assert public_hop["title"].startswith("bisect")  # outwards, LAN to public: fine
        d.stop()
        open_d = daemon("allow_private_redirects = true\n")
        allowed = open_d.call("summarize/url", {"url": via(local + SMALL_PAGE), "model": "fake-4k"})
        assert allowed["title"].startswith("bisect")
        assert pages.hits[-1].headers["host"] == f"127.0.0.1:{port}"
    finally:
        up.stop()
        pages.stop()


# -- URLs that break the layers below ----------------------------------------------------


def test_odd_urls_are_fetch_errors(sd: Daemon, pages: Pages) -> None:
    """Out-of-range ports (named or redirected to), host names the IDNA codec refuses, a
    200 KB header line: each is -32006 with a reason, and the daemon keeps serving."""
    cases = [
        ("http://127.0.0.1:99999/", "bad_url"),
        ("http://127.0.0.1:-1/", "bad_url"),
        ("http://" + "a" * 70 + ".invalid/", "bad_url"),
        ("http://\u00ad/", "bad_url"),
        ("http://[::1/", "bad_url"),
        (pages.url("/to?" + quote("http://127.0.0.1:99999/", safe="")), "bad_url"),
        (pages.url("/to?" + quote("http://[bad/", safe="")), "bad_url"),
        (pages.url("/huge-header"), "unreachable"),
    ]
    for url, reason in cases:
        e = fetch_error(sd, url)
        assert (e.code, e.data["reason"], e.data["url"]) == (-32006, reason, url), (url, e.message)
    assert sd.call("daemon/status")["config_ok"]
