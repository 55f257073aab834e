"""Attachments: files the daemon reads, what kind they are, their limits, and their blobs.

A ``chat/send`` context item is text the client sends, a ``path`` the daemon reads (as
the same user), or base64 ``data``. Its kind comes from its first bytes, never from a
file name: PNG, JPEG, WebP and GIF images go to the model as image parts (data URLs),
PDFs as the text ``pypdf`` extracts from them, anything else that is UTF-8 as text.
Everything else is refused, as is a file past its kind's limit, before anything is
stored.

Images and PDFs are kept once each, by SHA-256, under the data folder's ``blobs/``
(files 0600, folders 0700); a message's stored context refers to them by hash, so a
continued conversation sends them again without the original file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import io
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from assistantd import errors

Kind = Literal["image", "pdf", "text"]

MiB = 1024 * 1024
# Largest attachment of each kind, in bytes (OpenAI takes images up to 20 MB).
LIMITS: dict[Kind, int] = {"image": 20 * MiB, "pdf": 32 * MiB, "text": 4 * MiB}
MAX_PDF_TEXT_CHARS = 4_000_000  # what a PDF's extracted text may add to a message
IMAGE_TOKENS = 1000  # a generous estimate of one image's share of the context window
PDF_TIMEOUT_S = 60.0
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
PDF_TYPE = "application/pdf"

# Models known not to take images (glob patterns); ``[models."X"] vision`` overrides.
NO_VISION: tuple[str, ...] = (
    "gemma-3-270m*",
    "gemma-3-1b*",
    "gpt-3.5-*",
    "deepseek-chat",
    "deepseek-reasoner",
    "plamo-*",
)


def refuse(message: str, reason: str, **data: Any) -> errors.InvalidParams:
    return errors.InvalidParams(message, reason=reason, **data)


def sniff(head: bytes) -> str | None:
    """The MIME type the first bytes show, for the binary kinds taken; else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.lstrip(b"\t\n\r \x0c")[:5] == b"%PDF-":
        return PDF_TYPE
    return None


def kind_of(mime: str) -> Kind:
    return "image" if mime in IMAGE_TYPES else "pdf" if mime == PDF_TYPE else "text"


@dataclass
class Loaded:
    """One attachment, read and checked, not yet stored."""

    name: str
    type: str  # MIME
    kind: Kind
    text: str | None = None  # text, or a PDF's extracted text
    data: bytes | None = None  # an image's or a PDF's bytes, kept as a blob
    path: str | None = None
    sha256: str | None = None  # of ``data``
    url: str | None = None  # an image's data URL

    def __post_init__(self) -> None:
        # Hashing and encoding 20 MB take tens of ms: done here, off the event loop.
        if self.data is not None:
            self.sha256 = hashlib.sha256(self.data).hexdigest()
            if self.kind == "image":
                self.url = data_url(self.type, self.data)

    def stored(self) -> dict[str, Any]:
        """What the message keeps: text as text, binary kinds by their blob's hash."""
        out: dict[str, Any] = {"name": self.name}
        if self.text is not None:
            out["text"] = self.text
        if self.kind != "text" or self.type != "text/plain":
            out["type"] = self.type
        if self.data is not None:
            out["sha256"] = self.sha256
            out["size"] = len(self.data)
        if self.path is not None:
            out["path"] = self.path
        return out


def classify(data: bytes, declared: str | None, name: str) -> tuple[Kind, str]:
    """The kind and MIME type of ``data``: sniffed, and a declared type must agree."""
    sniffed = sniff(data[:16])
    declared = declared.split(";")[0].strip().lower() if declared else None
    if sniffed is not None:
        if (
            declared
            and declared != sniffed
            and not (declared == "image/jpg" and sniffed == "image/jpeg")
        ):
            raise refuse(
                f"{name} is declared {declared} but its content is {sniffed}",
                "unsupported_type",
                name=name,
                type=sniffed,
            )
        return kind_of(sniffed), sniffed
    if declared and (declared.startswith("image/") or declared == PDF_TYPE):
        raise refuse(
            f"{name} is declared {declared} but its content is not one "
            "(images: PNG, JPEG, WebP, GIF)",
            "unsupported_type",
            name=name,
        )
    if declared and not _texty(declared):
        raise refuse(f"{name}: {declared} is not a type taken", "unsupported_type", name=name)
    if b"\0" in data[:8192]:
        raise refuse(
            f"{name} is binary, and not an image (PNG, JPEG, WebP, GIF) or a PDF",
            "unsupported_type",
            name=name,
        )
    return "text", declared or "text/plain"


def _texty(mime: str) -> bool:
    return mime.startswith("text/") or mime in (
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/javascript",
        "application/x-sh",
    )


def check_size(size: int, kind: Kind, name: str) -> None:
    if size > LIMITS[kind]:
        raise refuse(
            f"{name} is {size} bytes; a {kind} attachment may have at most {LIMITS[kind]}",
            "too_large",
            name=name,
            size=size,
            limit=LIMITS[kind],
        )


def read_path(path: str) -> bytes:
    """A regular file's bytes, at most the largest limit plus one. FIFOs, devices and
    folders are refused without a read (opening with O_NONBLOCK cannot hang on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise refuse(f"no such file: {path}", "not_found", path=path) from None
        if e.errno == errno.EISDIR:
            raise refuse(f"{path} is a folder, not a file", "unsupported_type", path=path) from None
        raise refuse(f"cannot read {path}: {e.strerror}", "unreadable", path=path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise refuse(f"{path} is {what}", "unsupported_type", path=path)
        cap = max(LIMITS.values())
        if st.st_size > cap:
            raise refuse(
                f"{path} is {st.st_size} bytes; an attachment may have at most {cap}",
                "too_large",
                path=path,
                size=st.st_size,
                limit=cap,
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise refuse(f"cannot read {path}: {e.strerror}", "unreadable", path=path) from None
    finally:
        os.close(fd)
    return data


def pdf_text(data: bytes, name: str) -> str:
    """The text of a PDF's pages (``pypdf``, imported here: it costs ~0.4 s)."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            with contextlib.suppress(Exception):
                reader.decrypt("")
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception as e:  # pypdf raises many kinds on a broken file
        raise refuse(
            f"{name}: could not read the PDF ({type(e).__name__})", "unsupported_type", name=name
        ) from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise refuse(
            f"{name}: the PDF has no text to extract (a scan?)", "unsupported_type", name=name
        )
    if len(text) > MAX_PDF_TEXT_CHARS:
        raise refuse(
            f"{name}: the PDF's text is {len(text)} characters; at most {MAX_PDF_TEXT_CHARS}",
            "too_large",
            name=name,
        )
    return text


def load_one(
    name: str | None, text: str | None, path: str | None, data: str | None, declared: str | None
) -> Loaded:
    """Read, type and check one context item (a blocking call: run it off the loop)."""
    if text is not None:
        label = name or "text"
        if declared and not _texty(declared.split(";")[0].strip().lower()):
            raise refuse(
                f"{label}: a text item cannot be {declared} (send images and PDFs as data)",
                "unsupported_type",
                name=label,
            )
        check_size(len(text.encode("utf-8", "surrogatepass")), "text", label)
        return Loaded(label, declared or "text/plain", "text", text=text)
    if path is not None:
        raw = read_path(path)
        label = name or Path(path).name or path
    else:
        label = name or "data"
        try:
            raw = base64.b64decode(data or "", validate=True)
        except (binascii.Error, ValueError):
            raise refuse(f"{label}: data is not base64", "bad_data", name=label) from None
    kind, mime = classify(raw, declared, label)
    check_size(len(raw), kind, label)
    if kind == "text":
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(
                f"{label} is neither UTF-8 text, an image (PNG, JPEG, WebP, GIF) nor a PDF",
                "unsupported_type",
                name=label,
            ) from None
        return Loaded(label, mime, "text", text=decoded, path=path)
    if kind == "pdf":
        return Loaded(label, mime, "pdf", text=pdf_text(raw, label), data=raw, path=path)
    return Loaded(label, mime, "image", data=raw, path=path)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class Blobs:
    """Attachments' bytes, one file per SHA-256 under ``folder`` (blocking calls)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.folder / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Keep ``data`` once (an existing blob is left as it is); its hash."""
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path(sha)
        with contextlib.suppress(FileNotFoundError):
            os.utime(dest)  # kept: marked as just used, so a delete's clean-up spares it
            return sha
        for folder in (self.folder, dest.parent):
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)
        tmp = dest.with_name(f".{sha}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return sha

    def drop(self, sha256: str, younger_than_s: float = 0.0) -> bool:
        """Remove a blob unless it was written or reused in the last ``younger_than_s``."""
        path = self.path(sha256)
        try:
            if time.time() - path.stat().st_mtime < younger_than_s:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def get(self, sha256: str) -> bytes | None:
        """A blob's bytes; None when it is gone."""
        try:
            return self.path(sha256).read_bytes()
        except (OSError, ValueError):
            return None


def takes_images(model: str, vision: bool | None, managed: bool) -> bool:
    """Whether ``model`` takes image parts: the config's word, else the table of models
    known not to, else not for a managed local server, else yes."""
    import fnmatch

    if vision is not None:
        return vision
    if any(fnmatch.fnmatchcase(model, p) for p in NO_VISION):
        return False
    return not managed
