"""The config's [network] proxy, no_proxy and ca_bundle, against a real HTTP proxy
(tinyproxy, started by the test on loopback, logging every request) and a daemon started
as a service starts it: with no proxy or certificate variables in its environment."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.pages import Pages, localhost_tls
from tests.upstream import Upstream

USER, PASSWORD = "proxyuser", "s3cret-proxy-pw"
PAGE = "/fresh/library/bisect.html"
# What a shell may carry and a unit started by systemd or launchd does not.
SHELL_VARS = (
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)


class Tinyproxy:
    """A tinyproxy on a free loopback port that wants a user and password, and logs
    every request line it gets."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("tinyproxy")
        assert exe, "tinyproxy is missing: apt-get install -y tinyproxy (scripts/test --install)"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = folder / "tinyproxy.log"
        conf = folder / "tinyproxy.conf"
        conf.write_text(
            f'Port {self.port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{self.log}"\n'
            "LogLevel Info\nMaxClients 100\nAllow 127.0.0.1\nDisableViaHeader Yes\n"
            f"BasicAuth {USER} {PASSWORD}\n"
        )
        self.proc = subprocess.Popen(
            [exe, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, f"tinyproxy exited: {self.log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "tinyproxy did not start listening"
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """Each request line the proxy got, e.g. "POST http://127.0.0.1:PORT/v1/... HTTP/1.1"."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return re.findall(r"Request \(file descriptor \d+\): (.*)", text)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tinyproxy]:
    """A running tinyproxy; and no proxy or certificate variable in the environment the
    test's daemons start with, as for a service."""
    for var in SHELL_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    tp = Tinyproxy(tmp_path)
    yield tp
    tp.stop()


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    with Pages() as server:
        yield server


def network(proxy: Tinyproxy, extra: str = "") -> str:
    return f'\n[network]\nproxy = "{proxy.url}"\n{extra}'


def chat(d: Daemon) -> dict[str, Any]:
    result: dict[str, Any] = d.call("chat/send", {"message": "through the proxy"})
    return result


def test_provider_and_page_requests_go_through_the_proxy(
    make_daemon: Any, upstream: Upstream, pages: Pages, proxy: Tinyproxy
) -> None:
    """With [network] proxy, a chat's request to the (loopback) provider and a page fetch
    both go through the proxy, with its user and password."""
    d: Daemon = make_daemon(fake_provider_config(upstream, extra=network(proxy)))
    assert chat(d)["text"] == "You said: through the proxy"
    chat_line = f"POST http://127.0.0.1:{upstream.port}/v1/chat/completions HTTP/1.1"
    assert chat_line in proxy.requests(), proxy.requests()
    r = d.call("summarize/url", {"url": pages.url(PAGE)})
    assert r["title"].startswith("bisect")
    assert f"GET http://127.0.0.1:{pages.port}{PAGE} HTTP/1.1" in proxy.requests()


def test_no_proxy_hosts_are_reached_directly(
    make_daemon: Any, upstream: Upstream, pages: Pages, proxy: Tinyproxy
) -> None:
    """A no_proxy host (the pages by the name localhost) is fetched directly while the
    provider at 127.0.0.1 still goes through the proxy."""
    cfg = fake_provider_config(upstream, extra=network(proxy, 'no_proxy = ["localhost"]\n'))
    d: Daemon = make_daemon(cfg)
    chat(d)
    url = f"http://localhost:{pages.port}{PAGE}"
    hits = len(pages.hits)
    assert d.call("summarize/url", {"url": url})["title"].startswith("bisect")
    assert len(pages.hits) > hits  # the page server got the request, not through the proxy
    lines = proxy.requests()
    assert not any(f":{pages.port}/" in line for line in lines), lines
    assert any(f"127.0.0.1:{upstream.port}/v1/chat/completions" in line for line in lines)


def test_proxy_change_applies_without_a_restart(
    make_daemon: Any, upstream: Upstream, proxy: Tinyproxy
) -> None:
    """A [network] proxy added to the running daemon's config is used by the next
    request (the provider's client is rebuilt), and removing it goes direct again."""
    plain = fake_provider_config(upstream)
    d: Daemon = make_daemon(plain)
    chat(d)
    assert proxy.requests() == []

    def apply(text: str, want: str | None) -> None:
        deadline = time.monotonic() + 30
        while True:  # written again until applied: the file watcher may start late
            d.config_path.write_text(text)
            status = d.call("daemon/status")
            if status["proxy"] == want:
                return
            assert time.monotonic() < deadline, status
            time.sleep(0.3)

    apply(plain + network(proxy), f"http://***@127.0.0.1:{proxy.port}")
    chat(d)
    assert len(proxy.requests()) == 1
    apply(plain, None)
    chat(d)
    assert len(proxy.requests()) == 1


def test_status_shows_the_proxy_without_its_password(
    make_daemon: Any, upstream: Upstream, proxy: Tinyproxy, isolated_dirs: Path
) -> None:
    """daemon/status, `assistantctl daemon status` and `doctor` show the proxy with its
    user and password hidden, and the password is in no log."""
    cfg = fake_provider_config(upstream, extra=network(proxy, 'no_proxy = ["intranet.example"]\n'))
    d: Daemon = make_daemon(cfg)
    s = d.call("daemon/status")
    shown = f"http://***@127.0.0.1:{proxy.port}"
    assert (s["proxy"], s["proxy_source"], s["no_proxy"]) == (
        shown,
        "config",
        ["intranet.example"],
    )
    chat(d)
    ctl = [sys.executable, "-m", "assistantd.cli", "--socket", str(d.socket)]
    for args in (["daemon", "status"], ["doctor"]):
        out = subprocess.run(
            [*ctl, *args], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
        ).stdout
        assert f"{shown} (from the config); not for intranet.example" in out, out
        assert PASSWORD not in out and USER not in out
    d.stop()
    logs = [p for p in isolated_dirs.rglob("*") if p.is_file() and p.suffix != ".conf"]
    logs = [p for p in logs if p != proxy.log and "config" not in p.parts]
    assert logs, "the daemon wrote no log"
    for p in logs:
        assert PASSWORD.encode() not in p.read_bytes(), p


def test_https_page_through_the_proxy_with_the_ca_bundle(
    make_daemon: Any, upstream: Upstream, proxy: Tinyproxy, tmp_path: Path
) -> None:
    """An https page whose certificate only [network] ca_bundle vouches for is fetched
    through the proxy's CONNECT tunnel; without ca_bundle the certificate is refused."""
    cert, tls = localhost_tls(tmp_path)
    with Pages(tls=tls) as https_pages:
        url = f"https://localhost:{https_pages.port}{PAGE}"
        d: Daemon = make_daemon(
            fake_provider_config(upstream, extra=network(proxy, f'ca_bundle = "{cert}"\n'))
        )
        assert d.call("summarize/url", {"url": url})["title"].startswith("bisect")
        assert f"CONNECT 127.0.0.1:{https_pages.port} HTTP/1.1" in proxy.requests()
        d.stop()
        bare = make_daemon(fake_provider_config(upstream, extra=network(proxy)))
        other = f"https://localhost:{https_pages.port}/fresh/library/heapq.html"  # not cached
        with pytest.raises(RpcError) as e:
            bare.call("summarize/url", {"url": other})
        assert (e.value.code, e.value.data["reason"]) == (-32006, "unreachable")
        assert "certificate" in e.value.message


def test_a_provider_over_tls_streams_with_the_ca_bundle_and_is_refused_without(
    make_daemon: Any, tmp_path: Path
) -> None:
    """A provider on HTTPS whose certificate only [network] ca_bundle vouches for streams
    an answer on the daemon's own HTTP/1.1 transport (no proxy), and the next message
    of the chat goes on the same TLS connection. Without ca_bundle the certificate is
    refused, and the error says so."""
    cert, tls = localhost_tls(tmp_path)
    with Upstream(tls=tls) as up:
        config = fake_provider_config(up, extra=f'\n[network]\nca_bundle = "{cert}"\n')
        d: Daemon = make_daemon(config)
        deltas: list[str] = []
        with d.client() as c:
            r = c.call(
                "chat/send",
                {"message": "over TLS [[words:40]]"},
                on_notify=lambda m, p: deltas.append(p["text"]) if m == "chat/delta" else None,
            )
            assert r["text"] == " ".join(f"w{i}" for i in range(1, 41)) == "".join(deltas)
            again = c.call(
                "chat/send", {"message": "again", "conversation_id": r["conversation_id"]}
            )
        assert again["text"] == "You said: again"
        assert len({q["peer"] for q in up.requests}) == 1  # one connection, kept
        d.stop()
        bare: Daemon = make_daemon(fake_provider_config(up))
        with pytest.raises(RpcError) as e:
            bare.call("chat/send", {"message": "refused"})
        assert e.value.code == -32003
        assert "TLS certificate is not trusted (self-signed certificate)" in e.value.message
        assert len(up.requests) == 2  # the refused one never reached the server


# -- carrying the shell's variables at install --------------------------------------------
def install(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`assistantctl daemon install ARGS` with ``env`` as the shell's variables and no
    systemctl on PATH (so nothing is enabled), stdin not a terminal."""
    bin_dir = Path(sys.executable).parent
    base = {k: v for k, v in os.environ.items() if k.upper() not in SHELL_VARS}
    return subprocess.run(
        [str(bin_dir / "assistantctl"), "daemon", "install", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**base, "PATH": f"{bin_dir}:{tmp_path / 'empty'}", **env},
        check=True,
    )


SHELL = {
    "HTTPS_PROXY": f"http://{USER}:{PASSWORD}@proxy.example:3128",
    "NO_PROXY": "localhost,127.0.0.1",
    "SSL_CERT_FILE": "/etc/ssl/corp-root.pem",
}


def test_install_dry_run_shows_the_carried_variables(tmp_path: Path) -> None:
    """--dry-run --proxy-env unit shows the service with the shell's proxy variables in its
    environment (the password as ***) and writes nothing; --proxy-env config shows the
    [network] table it would add; with neither, install only says (on stderr) what the
    shell has."""
    unit = install(tmp_path, "--dry-run", "--proxy-env", "unit", env=SHELL).stdout
    assert "Environment=HTTPS_PROXY=http://***@proxy.example:3128" in unit
    assert "Environment=NO_PROXY=localhost,127.0.0.1" in unit
    assert "Environment=SSL_CERT_FILE=/etc/ssl/corp-root.pem" in unit
    assert PASSWORD not in unit and USER not in unit
    config_dir = Path(os.environ["XDG_CONFIG_HOME"])
    assert not (config_dir / "systemd").exists() and not (config_dir / "assistantd").exists()
    table = install(tmp_path, "--dry-run", "--proxy-env", "config", env=SHELL).stdout
    assert (
        '[network]\nproxy = "http://***@proxy.example:3128"\n'
        'no_proxy = ["localhost", "127.0.0.1"]\nca_bundle = "/etc/ssl/corp-root.pem"\n'
    ) in table
    assert "Environment=HTTPS_PROXY" not in table and PASSWORD not in table
    plain = install(tmp_path, "--dry-run", env=SHELL)
    assert "note: this shell has HTTPS_PROXY=http://***@proxy.example:3128" in plain.stderr
    assert "--proxy-env config" in plain.stderr and PASSWORD not in plain.stderr
    assert plain.stdout.startswith("# ") and "Environment=HTTPS_PROXY" not in plain.stdout


def test_install_writes_a_unit_systemd_accepts_with_the_proxy(tmp_path: Path) -> None:
    """--proxy-env unit writes the service with the variables (readable by the user only)
    and says so; systemd-analyze verify accepts it."""
    done = install(tmp_path, "--proxy-env", "unit", env=SHELL)
    service = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "assistantd.service"
    text = service.read_text()
    assert f"Environment=HTTPS_PROXY={SHELL['HTTPS_PROXY']}" in text.splitlines()
    assert service.stat().st_mode & 0o077 == 0
    assert "carried HTTPS_PROXY=http://***@proxy.example:3128, NO_PROXY=" in done.stdout
    assert PASSWORD not in done.stdout
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(service), str(service.with_suffix(".socket"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (checked.returncode, checked.stderr) == (0, ""), checked.stderr


def test_install_carries_the_proxy_into_the_config(
    tmp_path: Path, make_daemon: Any, upstream: Upstream, proxy: Tinyproxy
) -> None:
    """--proxy-env config adds the shell's proxy to the config's [network] and says so; a
    daemon started with that config and no proxy variables reaches its provider only
    through that proxy."""
    done = install(tmp_path, "--proxy-env", "config", env={"HTTPS_PROXY": proxy.url})
    config_file = Path(os.environ["XDG_CONFIG_HOME"]) / "assistantd" / "config.toml"
    assert f"carried HTTPS_PROXY=http://***@127.0.0.1:{proxy.port} into the [network]" in (
        done.stdout
    )
    written = config_file.read_text()
    assert written == f'[network]\nproxy = "{proxy.url}"\n'
    d: Daemon = make_daemon(fake_provider_config(upstream) + "\n" + written)
    assert "HTTPS_PROXY" not in d.env and "https_proxy" not in d.env
    assert chat(d)["text"] == "You said: through the proxy"
    assert [line.split()[1] for line in proxy.requests()] == [
        f"http://127.0.0.1:{upstream.port}/v1/chat/completions"
    ]


@pytest.mark.parametrize(
    ("host", "direct"),
    [
        ("intranet.example", True),
        ("wiki.intranet.example", True),
        ("intranet.example.org", False),
        ("sub.corp.example", True),
        ("corp.example", False),
        ("10.1.2.3", True),
        ("10.2.0.1", False),
        ("::1", True),
        ("localhost", True),
        ("api.openai.com", False),
    ],
)
def test_no_proxy_matching(host: str, direct: bool) -> None:
    """no_proxy entries match as NO_PROXY does: a name and its subdomains, a leading dot
    for subdomains only, addresses, CIDR blocks, host:port by its host."""
    from assistantd.config import NetworkConfig
    from assistantd.network import Network

    net = Network.from_config(
        NetworkConfig(
            proxy="http://p:1",
            no_proxy=["intranet.example", ".corp.example, 10.1.0.0/16", "[::1]", "localhost:8080"],
        )
    )
    assert net.bypass(host) is direct


def test_unreadable_ca_bundle_is_a_clear_error(
    make_daemon: Any, upstream: Upstream, pages: Pages, tmp_path: Path
) -> None:
    """A ca_bundle that cannot be read fails a chat with -32003 and a summary (its
    provider or its page fetch) with an error, each naming the file."""
    missing = tmp_path / "no-such-root.pem"
    d: Daemon = make_daemon(
        fake_provider_config(upstream, extra=f'\n[network]\nca_bundle = "{missing}"\n')
    )
    with pytest.raises(RpcError) as e:
        chat(d)
    assert e.value.code == -32003 and str(missing) in e.value.message
    with pytest.raises(RpcError) as e:
        d.call("summarize/url", {"url": pages.url(PAGE)})
    assert e.value.code in (-32003, -32006) and str(missing) in e.value.message


@pytest.mark.parametrize(
    "bad", ["proxy.corp:3128", "socks4://p:1080", "http://:3128", "http://p:x"]
)
def test_a_proxy_that_is_not_an_http_url_is_a_config_error(bad: str) -> None:
    """[network] proxy must be an http(s) URL with a host; else the config error names it."""
    from assistantd import config

    with pytest.raises(config.ConfigError, match=r"config.toml:line 3: network.proxy"):
        config.parse(f'# corp\n[network]\nproxy = "{bad}"\n')


def test_an_environment_proxy_is_shown_and_used_by_providers(
    make_daemon: Any, upstream: Upstream, pages: Pages, proxy: Tinyproxy
) -> None:
    """Without [network], a daemon whose own environment has HTTPS_PROXY/HTTP_PROXY uses it
    for provider requests and shows it (source "environment"); page fetches stay direct."""
    d: Daemon = make_daemon(
        fake_provider_config(upstream), env={"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url}
    )
    s = d.call("daemon/status")
    assert (s["proxy"], s["proxy_source"]) == (f"http://***@127.0.0.1:{proxy.port}", "environment")
    chat(d)
    assert len(proxy.requests()) == 1
    assert d.call("summarize/url", {"url": pages.url(PAGE)})["title"].startswith("bisect")
    assert len(proxy.requests()) >= 2  # the summary's model requests, not the page
    assert not any(f":{pages.port}/" in line for line in proxy.requests())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@proxy:3128", "http://***@proxy:3128"),
        ("user:pw@proxy:3128", "***@proxy:3128"),
        ("http://user:p/w@d@proxy:3128/", "http://***@proxy:3128/"),
        ("http://proxy:3128", "http://proxy:3128"),
    ],
)
def test_redact_hides_user_and_password(url: str, shown: str) -> None:
    """A proxy URL is shown without its user and password, even without a scheme or with
    a raw "/" or "@" in the password."""
    from assistantd.network import redact

    assert redact(url) == shown
