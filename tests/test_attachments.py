"""Attachments end to end: files the daemon reads (images, PDFs, text), their kinds sniffed
from their bytes, refusals that store nothing, blobs that a follow-up resends, exports
that carry them, and models that take no images."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import ROOT, Daemon, fake_provider_config
from tests.upstream import Upstream


def png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A real PNG image of one colour."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\0" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def pdf(lines: list[str]) -> bytes:
    """A real one-page PDF (Helvetica text, a correct xref table)."""
    text = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({s}) Tj T*" for s in lines) + " ET"
    stream = text.encode("latin-1")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]"
        b" /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objs) + 1,
        xref,
    )
    return out


def send(d: Daemon, **params: Any) -> dict[str, Any]:
    with d.client() as c:
        result: dict[str, Any] = c.call("chat/send", params)
    return result


def last_user(up: Upstream) -> Any:
    return up.requests[-1]["body"]["messages"][-1]["content"]


def data_dir() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "assistantd"


def refused(d: Daemon, up: Upstream, context: list[dict[str, Any]], **kw: Any) -> RpcError:
    """Send, expect -32602, and check that nothing was stored or sent."""
    before = d.call("conversations/list")["total"]
    up.reset()
    with pytest.raises(RpcError) as e:
        send(d, message="look", context=context, **kw)
    assert e.value.code == -32602, e.value.message
    assert d.call("conversations/list")["total"] == before
    assert up.requests == []
    return e.value


def test_image_path_reaches_provider_as_image_part(
    daemon: Daemon, upstream: Upstream, tmp_path: Path
) -> None:
    """An image file (typed by its bytes, not its name) reaches the provider as an image part."""
    image = png()
    f = tmp_path / "shot.txt"  # the wrong extension: the bytes say PNG
    f.write_bytes(image)
    r = send(daemon, message="what is this?", context=[{"path": str(f)}])
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert last_user(upstream) == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    conv = daemon.call("conversations/get", {"id": r["conversation_id"]})
    item = conv["messages"][0]["context"][0]
    sha = hashlib.sha256(image).hexdigest()
    assert item == {
        "name": "shot.txt",
        "type": "image/png",
        "sha256": sha,
        "size": len(image),
        "path": str(f),
    }


def test_follow_up_resends_image_from_blob_store(
    daemon: Daemon, upstream: Upstream, tmp_path: Path
) -> None:
    """The image is kept once by sha256 (0600 in 0700), and a follow-up resends it after the
    original file is gone."""
    image = png(rgb=(0, 0, 255))
    f = tmp_path / "blue.png"
    f.write_bytes(image)
    r = send(daemon, message="first", context=[{"path": str(f)}])
    cid = r["conversation_id"]
    send(daemon, message="again", conversation_id=cid, context=[{"path": str(f)}])
    f.unlink()
    upstream.reset()
    send(daemon, message="and now?", conversation_id=cid)
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    part = {"type": "image_url", "image_url": {"url": url}}
    msgs = upstream.requests[0]["body"]["messages"]
    assert msgs[0]["content"] == [{"type": "text", "text": "first"}, part]
    assert msgs[2]["content"] == [{"type": "text", "text": "again"}, part]
    assert msgs[-1]["content"] == "and now?"
    sha = hashlib.sha256(image).hexdigest()
    blobs = data_dir() / "blobs"
    files = [p for p in blobs.rglob("*") if p.is_file()]
    assert files == [blobs / sha[:2] / sha]
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(blobs.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700


def test_pdf_goes_as_extracted_text(daemon: Daemon, upstream: Upstream, tmp_path: Path) -> None:
    """A PDF's text, extracted by the daemon, reaches the provider as a context block."""
    f = tmp_path / "report.pdf"
    f.write_bytes(pdf(["Quarterly report", "Revenue grew by FACT-42 percent"]))
    send(daemon, message="summarize", context=[{"path": str(f)}])
    content = last_user(upstream)
    assert isinstance(content, str)
    assert content.startswith('summarize\n\n<context name="report.pdf">\n')
    assert "Quarterly report" in content and "Revenue grew by FACT-42 percent" in content


def test_text_file_and_inline_data(daemon: Daemon, upstream: Upstream, tmp_path: Path) -> None:
    """A UTF-8 file goes as text; base64 data with a declared type goes by its bytes."""
    f = tmp_path / "notes.md"
    f.write_text("héllo from a file\n")
    image = png()
    b64 = base64.b64encode(image).decode()
    send(
        daemon,
        message="see",
        context=[{"path": str(f)}, {"name": "stdin", "data": b64, "type": "image/png"}],
    )
    assert last_user(upstream) == [
        {
            "type": "text",
            "text": 'see\n\n<context name="notes.md">\nhéllo from a file\n\n</context>',
        },
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64}},
    ]


def test_refusals_store_nothing(daemon: Daemon, upstream: Upstream, tmp_path: Path) -> None:
    """Missing, too large, binary, mistyped and non-regular files are -32602 with a reason,
    and nothing is stored or sent."""
    big = tmp_path / "big.txt"
    big.write_bytes(b"a" * (4 * 1024 * 1024 + 1))
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: refused by its size, never read
    blob = tmp_path / "x.bin"
    blob.write_bytes(b"\x00\x01\x02\x03binary")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = [
        ([{"path": str(tmp_path / "nope.png")}], "not_found"),
        ([{"path": str(big)}], "too_large"),
        ([{"path": str(huge)}], "too_large"),
        ([{"path": str(blob)}], "unsupported_type"),
        ([{"path": str(fifo)}], "unsupported_type"),
        ([{"path": "/dev/zero"}], "unsupported_type"),
        ([{"path": str(tmp_path)}], "unsupported_type"),
        (
            [{"name": "x.pdf", "data": base64.b64encode(b"%PDF-1.4\nbroken").decode()}],
            "unsupported_type",
        ),
        ([{"name": "x", "data": "not base64!"}], "bad_data"),
        ([{"name": "x", "text": "hi", "type": "image/png"}], "unsupported_type"),
        (
            [{"name": "x", "data": base64.b64encode(b"plain").decode(), "type": "image/png"}],
            "unsupported_type",
        ),
        (
            [{"name": "x", "data": base64.b64encode(png()).decode(), "type": "application/zip"}],
            "unsupported_type",
        ),
    ]
    for context, reason in cases:
        started = time.monotonic()
        err = refused(daemon, upstream, context)
        assert err.data["reason"] == reason, (context, err.message)
        assert time.monotonic() - started < 10  # a FIFO or a device does not hang the daemon
    # A refusal in a continued conversation stores nothing in it either.
    cid = send(daemon, message="hi")["conversation_id"]
    refused(daemon, upstream, [{"path": str(blob)}], conversation_id=cid)
    assert len(daemon.call("conversations/get", {"id": cid})["messages"]) == 2
    assert not (data_dir() / "blobs").exists()


def test_relative_path_is_invalid(daemon: Daemon, upstream: Upstream) -> None:
    """A relative path is -32602: the daemon's working folder is not the client's."""
    err = refused(daemon, upstream, [{"path": "shot.png"}])
    assert "absolute" in err.message or "absolute" in json.dumps(err.data)


def test_model_without_vision_is_refused_before_any_request(
    make_daemon: Any, upstream: Upstream, tmp_path: Path
) -> None:
    """An image for a model configured `vision = false` is -32602 naming the model, and the
    provider gets no request."""
    extra = '[models."fake-blind"]\nvision = false\n'
    d: Daemon = make_daemon(fake_provider_config(upstream, extra=extra))
    f = tmp_path / "a.png"
    f.write_bytes(png())
    err = refused(d, upstream, [{"path": str(f)}], model="fake-blind")
    assert err.data["reason"] == "unsupported_type"
    assert "fake-blind" in err.message and err.data["model"] == "fake-blind"
    send(d, message="text is fine", model="fake-blind")
    assert len(upstream.requests) == 1


def test_local_server_and_known_model_take_no_images(
    make_daemon: Any, upstream: Upstream, tmp_path: Path
) -> None:
    """A `[local.*]` server (not started) and the bundled gemma-3-270m are refused images."""
    config = fake_provider_config(upstream) + (
        f'\n[local.tiny]\ncommand = "/bin/false"\nmodel = "{tmp_path / "none.gguf"}"\n'
        '\n[providers.fake2]\nbase_url = "' + upstream.base_url + '"\n'
        'models = ["gemma-3-270m*"]\nneeds_key = false\n'
    )
    d: Daemon = make_daemon(config)
    f = tmp_path / "a.png"
    f.write_bytes(png())
    for model in ("tiny", "gemma-3-270m"):
        err = refused(d, upstream, [{"path": str(f)}], model=model)
        assert err.data["reason"] == "unsupported_type" and model in err.message
    servers = d.call("local/list")["servers"]
    assert [s["state"] for s in servers if s["name"] == "tiny"] == ["stopped"]


def test_export_carries_blobs(daemon: Daemon, upstream: Upstream, tmp_path: Path) -> None:
    """JSON export has each image as base64; Markdown links the blob by name."""
    image = png(rgb=(0, 255, 0))
    f = tmp_path / "green.png"
    f.write_bytes(image)
    cid = send(daemon, message="look", context=[{"path": str(f)}])["conversation_id"]
    out = daemon.call("conversations/export", {"id": cid, "format": "json"})
    item = json.loads(out["content"])["messages"][0]["context"][0]
    assert base64.b64decode(item["data"]) == image and item["name"] == "green.png"
    md = daemon.call("conversations/export", {"id": cid, "format": "markdown"})["content"]
    sha = hashlib.sha256(image).hexdigest()
    blob = data_dir() / "blobs" / sha[:2] / sha
    assert f"[green.png]({blob.as_uri()}) (image/png, {len(image)} bytes)" in md


def run_cli(
    d: Daemon, *args: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**d.env, "ASSISTANTD_SOCKET": str(d.socket), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "assistantd.cli", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=cwd or ROOT,
        timeout=60,
    )


def test_cli_attach_files_and_stdin(daemon: Daemon, upstream: Upstream, tmp_path: Path) -> None:
    """`assistantctl chat -a FILE -a FILE` (relative to the client's folder) and `-a -` (stdin,
    typed by --type or sniffed) reach the provider as image parts and text."""
    image = png()
    (tmp_path / "shot.png").write_bytes(image)
    (tmp_path / "notes.txt").write_text("remember FACT-7\n")
    p = run_cli(daemon, "chat", "-a", "shot.png", "-a", "notes.txt", "look", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert last_user(upstream) == [
        {
            "type": "text",
            "text": 'look\n\n<context name="notes.txt">\nremember FACT-7\n\n</context>',
        },
        {"type": "image_url", "image_url": {"url": url}},
    ]
    for extra in (["--type", "image/png"], []):
        upstream.reset()
        p = run_cli(daemon, "chat", "-a", "-", *extra, "and this?", stdin=image)
        assert p.returncode == 0, p.stderr
        assert last_user(upstream)[1] == {"type": "image_url", "image_url": {"url": url}}
    p = run_cli(daemon, "chat", "-a", str(tmp_path / "missing.png"), "hm")
    assert p.returncode != 0 and b"no such file" in p.stderr


def test_delete_removes_blobs_no_one_refers_to(
    daemon: Daemon, upstream: Upstream, tmp_path: Path
) -> None:
    """Deleting a conversation removes its blobs once no message (a fork's) refers to them;
    a blob written in the last minute is spared (a send may be about to refer to it)."""
    image = png(rgb=(9, 9, 9))
    f = tmp_path / "x.png"
    f.write_bytes(image)
    sha = hashlib.sha256(image).hexdigest()
    blob = data_dir() / "blobs" / sha[:2] / sha
    a = send(daemon, message="look", context=[{"path": str(f)}])["conversation_id"]
    b = daemon.call("conversations/fork", {"id": a})["id"]
    old = time.time() - 3600
    os.utime(blob, (old, old))  # past the grace minute
    daemon.call("conversations/delete", {"id": a})
    assert blob.exists()  # the fork still refers to it
    daemon.call("conversations/delete", {"id": b})
    assert not blob.exists()
    c = send(daemon, message="look again", context=[{"path": str(f)}])["conversation_id"]
    daemon.call("conversations/delete", {"id": c})
    assert blob.exists()  # written a moment ago: spared


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (png()[:16], "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\n%PDF-1.7\n", "application/pdf"),
        (b"%PNG is not a PNG", None),
        (b"just text", None),
    ],
)
def test_sniff_types_by_magic_bytes(head: bytes, mime: str | None) -> None:
    """Each kind taken is told by its first bytes; anything else is not sniffed as one."""
    from assistantd.attachments import sniff

    assert sniff(head) == mime
