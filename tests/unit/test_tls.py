"""The default TLS trust (``assistantd.tls``) holds what httpx2's own would hold, with
and without ``SSL_CERT_FILE``/``SSL_CERT_DIR``, and the context a daemon preloads is
handed out once. Each case runs in a fresh interpreter: the environment is read there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.pages import localhost_tls

ROOT = Path(__file__).resolve().parents[2]

# Prints, for assistantd.tls's preloaded context, a second one, and httpx2's: whether
# each verifies certificates and host names, and the CA certificates it trusts.
PROBE = """
import json, ssl, httpx2
from assistantd import tls
tls.preload()
first, second = tls.take(), tls.take()
theirs = httpx2.create_ssl_context(trust_env=True)
def show(c):
    cas = sorted(json.dumps(x, sort_keys=True) for x in c.get_ca_certs())
    return {"required": c.verify_mode == ssl.CERT_REQUIRED, "hostnames": c.check_hostname,
            "cas": cas, "count": c.cert_store_stats()["x509_ca"]}
print(json.dumps({"first": show(first), "second": show(second), "theirs": show(theirs),
                  "distinct": first is not second}))
"""


def probe(**env: str) -> dict[str, dict[str, object]]:
    base = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, dict[str, object]] = json.loads(out.stdout)
    return result


def test_default_trust_matches_httpx2() -> None:
    """With no SSL_CERT_* set, the preloaded context verifies and trusts the system's
    CA certificates, the same ones httpx2 would; a second take is a new context."""
    r = probe()
    assert r["distinct"]
    for name in ("first", "second"):
        assert r[name]["required"] and r[name]["hostnames"], r[name]
        assert r[name]["cas"] == r["theirs"]["cas"], name
    # The system bundle, read from a file at load time, shows up in the store's count.
    assert r["first"]["count"] == r["theirs"]["count"]
    assert int(str(r["first"]["count"])) > 10


def test_ssl_cert_file_replaces_the_default_trust(tmp_path: Path) -> None:
    """SSL_CERT_FILE names the only CA trusted, as it does for httpx2."""
    cert, _ = localhost_tls(tmp_path)
    r = probe(SSL_CERT_FILE=str(cert))
    assert r["first"]["count"] == r["theirs"]["count"] == 1
    assert r["first"]["cas"] == r["theirs"]["cas"]
    assert "localhost" in json.dumps(r["first"]["cas"])


def test_ssl_cert_dir_is_used(tmp_path: Path) -> None:
    """SSL_CERT_DIR (a hashed folder) is looked in, as httpx2 does: its certificates load
    on demand, so the two contexts hold none up front and both verify."""
    r = probe(SSL_CERT_DIR=str(tmp_path))
    assert r["first"]["required"] and r["first"]["hostnames"]
    assert r["first"]["count"] == r["theirs"]["count"] == 0


def test_daemon_command_exits_promptly_with_the_preload() -> None:
    """``python -m assistantd --version`` starts the preload and still exits 0 at once
    (the preload thread is joined, not abandoned)."""
    out = subprocess.run(
        [sys.executable, "-m", "assistantd", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("assistantd ") and not out.stderr
