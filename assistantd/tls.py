"""The default TLS trust that providers and pages are reached with (stdlib only).

A daemon starts making it on a thread of its own before it imports anything else
(``preload``, from ``__main__``): loading the CA bundle is 20-45 ms of OpenSSL with the
GIL released, so it runs on the second core while the daemon imports, and a cold
daemon's first request finds it made. (Importing on two threads at once was slower
than one after the other: only work that leaves the GIL is worth a thread here.)
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import sys
import threading
from pathlib import Path

# The usual CA bundles of Linux distributions, for a Python whose OpenSSL was built with
# paths this machine lacks (httpcore2 and truststore look in the same places).
CA_FILE_CANDIDATES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)


def default_context() -> ssl.SSLContext:
    """A new context with the default trust, as httpx2 makes it with ``trust_env``:
    ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else OpenSSL's compiled-in file or folder,
    else the first of ``CA_FILE_CANDIDATES`` found. On macOS and Windows, httpx2's own
    (the system's trust store, through truststore)."""
    if not sys.platform.startswith("linux"):
        import httpx2

        return httpx2.create_ssl_context(trust_env=True)
    if cafile := os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=cafile)
    if capath := os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=capath)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, and checks host names
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if Path(paths.openssl_cafile).is_file() else None
    capath = paths.openssl_capath if Path(paths.openssl_capath).is_dir() else None
    if capath and not cafile and not _hashed(capath):
        capath = None
    if not cafile and not capath:
        cafile = next((f for f in CA_FILE_CANDIDATES if Path(f).is_file()), None)
    if cafile or capath:
        ctx.load_verify_locations(cafile, capath)
    return ctx


def _hashed(folder: str) -> bool:
    """Whether ``folder`` holds certificates under OpenSSL's hashed names (``1a2b3c4d.0``)."""
    return any(re.fullmatch(r"[0-9a-fA-F]{8}\.\d", f.name) for f in Path(folder).iterdir())


_early: tuple[threading.Thread, list[ssl.SSLContext]] | None = None
_lock = threading.Lock()


def preload() -> None:
    """Start making a context on a thread (Linux only: elsewhere it would import httpx2)."""
    global _early
    if not sys.platform.startswith("linux"):
        return
    made: list[ssl.SSLContext] = []

    def make() -> None:
        with contextlib.suppress(Exception):  # met again, and reported, by ``take``
            made.append(default_context())

    thread = threading.Thread(target=make, name="assistantd-tls")
    thread.start()
    with _lock:
        _early = (thread, made)


def take() -> ssl.SSLContext:
    """The preloaded context the first time, else a new one; each caller gets its own,
    since a ``[network] ca_bundle`` is loaded into it."""
    global _early
    with _lock:
        early, _early = _early, None
    if early is not None:
        thread, made = early
        thread.join()
        if made:
            return made[0]
    return default_context()
