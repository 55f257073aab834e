"""PDFs as file parts for providers that take them (``pdf_input``), as extracted text for
the others; a follow-up resends each in its provider's shape from the blob store."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from assistantd import config, providers
from tests.conftest import Daemon, fake_provider_config
from tests.test_attachments import pdf, send
from tests.upstream import Upstream


def pdf_config(up: Upstream) -> str:
    """``fake`` (no pdf_input) and ``pdfs`` (pdf_input = true), both the loopback upstream."""
    return fake_provider_config(up) + (
        f'\n[providers.pdfs]\nbase_url = "{up.base_url}"\nmodels = ["pdf-*"]\n'
        "needs_key = false\npdf_input = true\n"
    )


def user_contents(up: Upstream) -> list[Any]:
    return [m["content"] for m in up.requests[-1]["body"]["messages"] if m["role"] == "user"]


def test_only_the_openai_preset_takes_pdfs() -> None:
    """`pdf_input` is true for the openai preset only, and a config key overrides it."""
    by = providers.build(config.Config())
    assert [n for n, p in by.items() if p.pdf_input] == ["openai"]
    by = providers.build(config.parse("[providers.openai]\npdf_input = false\n"))
    assert not by["openai"].pdf_input


def test_pdf_goes_as_file_part_where_the_provider_takes_it(
    make_daemon: Any, upstream: Upstream, tmp_path: Path
) -> None:
    """With `pdf_input = true` the provider receives the PDF as a file part carrying its
    base64, also on a follow-up after the file is gone; with the default it receives the
    extracted text, and so does the same conversation continued on such a provider."""
    d: Daemon = make_daemon(pdf_config(upstream))
    doc = pdf(["Quarterly report", "Revenue grew by FACT-42 percent"])
    f = tmp_path / "report.pdf"
    f.write_bytes(doc)
    part = {
        "type": "file",
        "file": {
            "filename": "report.pdf",
            "file_data": "data:application/pdf;base64," + base64.b64encode(doc).decode(),
        },
    }

    r = send(d, message="summarize", model="pdf-1", context=[{"path": str(f)}])
    assert user_contents(upstream) == [[{"type": "text", "text": "summarize"}, part]]

    f.unlink()
    send(d, message="and?", conversation_id=r["conversation_id"], model="pdf-1")
    assert user_contents(upstream) == [[{"type": "text", "text": "summarize"}, part], "and?"]

    send(d, message="again", conversation_id=r["conversation_id"], model="fake-echo")
    first = user_contents(upstream)[0]
    assert isinstance(first, str) and first.startswith('summarize\n\n<context name="report.pdf">')
    assert "Revenue grew by FACT-42 percent" in first


def test_pdf_goes_as_text_where_the_provider_does_not_take_it(
    make_daemon: Any, upstream: Upstream, tmp_path: Path
) -> None:
    """With `pdf_input` false (the default for a configured provider) the provider receives
    the PDF's extracted text and no file part."""
    d: Daemon = make_daemon(pdf_config(upstream))
    doc = pdf(["Minutes of the meeting", "Decided FACT-9"])
    data = base64.b64encode(doc).decode()
    send(d, message="read", model="fake-echo", context=[{"name": "m.pdf", "data": data}])
    [content] = user_contents(upstream)
    assert isinstance(content, str) and content.startswith('read\n\n<context name="m.pdf">\n')
    assert "Decided FACT-9" in content and data not in content
