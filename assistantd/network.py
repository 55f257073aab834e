"""How the daemon reaches the network: the config's ``[network]`` proxy, ``no_proxy``,
``ca_bundle`` and ``timeout_s``, for provider clients and page fetches alike.

A daemon started by systemd or launchd does not see the shell's ``HTTPS_PROXY`` or
``SSL_CERT_FILE``; ``[network]`` says the same in the config. A configured proxy carries
every request, loopback too (httpx2's explicit ``proxy=`` does the same), except those to
a ``no_proxy`` host: a router picks the proxied or the direct connection pool per request
by the request's host name (its ``Host`` header: page fetches send to a checked address and
name the host there). Without ``[network] proxy``, provider clients keep honouring the
environment's proxy variables as before, and page fetches go direct.

A proxy URL's user and password are never shown or logged: ``redact`` hides them.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import ssl

    import httpx2

    from assistantd.config import NetworkConfig

CONNECT_TIMEOUT_S = 10.0


class BadNetworkConfig(ValueError):
    """A ``[network]`` setting that cannot be used (an unreadable ``ca_bundle``)."""


def redact(url: str) -> str:
    """``url`` with any user and password replaced by ``***`` (also in an environment
    variable's ``user:pass@host:port`` without a scheme)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    # Up to the last "@": a password may hold a raw "/" or "@" (a path rarely has one,
    # and then more is hidden, never less).
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


@dataclass(frozen=True)
class Network:
    """The ``[network]`` settings in force; hashable, so a client built for one can be
    told apart from one built for the next."""

    proxy: str | None = None
    no_proxy: tuple[str, ...] = ()
    ca_bundle: str | None = None
    timeout_s: float | None = None

    @classmethod
    def from_config(cls, cfg: NetworkConfig) -> Network:
        entries = (e.strip().lower() for item in cfg.no_proxy for e in item.split(","))
        return cls(
            proxy=cfg.proxy,
            no_proxy=tuple(e for e in entries if e),
            ca_bundle=str(Path(cfg.ca_bundle).expanduser()) if cfg.ca_bundle else None,
            timeout_s=cfg.timeout_s,
        )

    @property
    def connect_timeout_s(self) -> float:
        return self.timeout_s or CONNECT_TIMEOUT_S

    def bypass(self, host: str) -> bool:
        """Whether ``host`` is reached directly (a ``no_proxy`` entry matches it)."""
        host = host.strip("[]").rstrip(".").lower()
        for entry in self.no_proxy:
            if entry == "*":
                return True
            name = entry.strip("[]").rstrip(".")
            if ":" in name and not _is_ip(name):  # host:port: the port is not checked
                name = name.rsplit(":", 1)[0]
            if "/" in name:  # a CIDR block
                try:
                    if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                        return True
                except ValueError:
                    pass
                continue
            if name.startswith("*."):
                name = name[1:]
            if name.startswith("."):
                if host.endswith(name):
                    return True
            elif host == name or host.endswith("." + name):
                return True
        return False

    def ssl_context(self) -> ssl.SSLContext:
        """The default trust (with ``SSL_CERT_FILE``/``SSL_CERT_DIR``) plus ``ca_bundle``."""
        import ssl

        from assistantd import tls

        ctx = tls.take()
        if self.ca_bundle:
            try:
                ctx.load_verify_locations(cafile=self.ca_bundle)
            except (OSError, ssl.SSLError) as e:
                raise BadNetworkConfig(
                    f"cannot use [network] ca_bundle {self.ca_bundle}: {e}"
                ) from None
        return ctx

    def transport(self, ctx: ssl.SSLContext | None = None, **kw: Any) -> httpx2.AsyncBaseTransport:
        """A transport for these settings: with a proxy, a router between a proxied and a
        direct pool; else direct. ``kw`` go to each pool (``limits``...)."""
        import httpx2

        ctx = ctx or self.ssl_context()
        direct = httpx2.AsyncHTTPTransport(verify=ctx, trust_env=False, **kw)
        if self.proxy is None:
            return direct
        proxied = httpx2.AsyncHTTPTransport(verify=ctx, trust_env=False, proxy=self.proxy, **kw)
        bypass = self.bypass

        class Router(httpx2.AsyncBaseTransport):
            """Each request through the proxy, or directly to a ``no_proxy`` host (by the
            host it names, or the address it goes to)."""

            async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
                to = (
                    direct
                    if bypass(_request_host(request)) or bypass(request.url.host)
                    else proxied
                )
                return await to.handle_async_request(request)

            async def aclose(self) -> None:
                await direct.aclose()
                await proxied.aclose()

        return Router()


ProxySource = Literal["config", "environment"]


def in_use(net: Network) -> tuple[str | None, ProxySource | None]:
    """(the proxy provider requests use, redacted; where it is set: config/environment)."""
    if net.proxy:
        return redact(net.proxy), "config"
    for scheme in ("https", "all", "http"):  # as urllib.request.getproxies reads them
        name = f"{scheme}_proxy"
        if found := os.environ.get(name) or os.environ.get(name.upper()):
            return redact(found), "environment"
    return None, None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _request_host(request: httpx2.Request) -> str:
    """The host a request is for: its ``Host`` header (without the port), else its URL's."""
    header = request.headers.get("host", "")
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header else request.url.host
