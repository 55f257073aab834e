"""The attach scenario both editor clients run (tests/nvim/attach.lua, tests/emacs/attach.el),
and what each must show and send: one set of assertions for Neovim and Emacs alike."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.conftest import Daemon
from tests.test_attachments import png
from tests.upstream import Upstream


def files(folder: Path) -> bytes:
    """Write the scenario's text file and PNG into ``folder``; the PNG's bytes."""
    image = png()
    (folder / "notes.txt").write_text("remember FACT-7\n")
    (folder / "dot.png").write_bytes(image)
    return image


def check(
    r: dict[str, Any],
    daemon: Daemon,
    upstream: Upstream,
    folder: Path,
    image: bytes,
    *,
    unsaved_name: str,
    cleared: tuple[str, str],
    asked: str,
) -> None:
    """What the editor showed (``r``, written by its scenario) and what the provider got:
    the files as a text part and an image_url part, unsaved buffers as text, a cleared
    queue, a file attached while an answer streams going with the next message, one
    attached before an ask going with the question (``asked``: that message), and a
    reopened conversation showing its attachments."""
    assert r["queued_lines"] == ["# Chat", "", "## You", "📎 notes.txt", "📎 dot.png", ""]
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    users = [
        [m["content"] for m in q["body"]["messages"] if m["role"] == "user"][-1]
        for q in upstream.requests
    ]
    assert users[0] == [
        {
            "type": "text",
            "text": '[[reply:seen]] look at these\n\n<context name="notes.txt">\n'
            "remember FACT-7\n\n</context>",
        },
        {"type": "image_url", "image_url": {"url": url}},
    ]
    assert "## You\n📎 notes.txt\n📎 dot.png\n[[reply:seen]] look at these\n\n## Assistant" in (
        "\n".join(r["first_lines"])
    )
    first = daemon.call("conversations/get", {"id": r["conversation"]})["messages"][0]
    assert [c.get("path") for c in first["context"]] == [
        str(folder / "notes.txt"),
        str(folder / "dot.png"),
    ]

    assert r["unsaved_queued"][-3:] == [f"📎 {unsaved_name}", "📎 notes.txt", ""]
    assert users[1] == (
        f'[[reply:ok]] drafts\n\n<context name="{unsaved_name}">\ndraft FACT-11\n\n</context>\n\n'
        '<context name="notes.txt">\nedited, not saved FACT-12\n\n</context>'
    )

    before, after = cleared
    assert r[before][-2:] == ["📎 notes.txt", ""]
    assert r[after][-2:] == ["## You", ""]
    assert users[2] == "[[reply:plain]] nothing attached"

    assert r["busy_lines"].count("📎 dot.png") == 1  # the first message's only
    assert r["after_busy"][-4:] == ["", "## You", "📎 dot.png", ""]
    assert users[3] == "[[reply:busy answer]] busy"
    assert users[4] == [
        {"type": "text", "text": "[[reply:after]] with it"},
        {"type": "image_url", "image_url": {"url": url}},
    ]

    assert users[5] == asked
    assert "## You\n📎 notes.txt\n[[reply:asked]] what is in it?" in "\n".join(r["ask_lines"])
    reopened = "\n".join(r["reopened"])
    assert "## You\n📎 notes.txt\n📎 dot.png\n[[reply:seen]] look at these\n" in reopened
