"""kill -9 of the daemon in the middle of 50 streaming chats, three times over the same
data: the database stays sound, finished turns are all there, and a new daemon serves."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from assistantd.client import Client, DaemonUnavailable, RpcError
from tests.conftest import Daemon, fake_provider_config
from tests.upstream import Upstream

CHATS = 50
ROUNDS = 3


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(1, n + 1))


class Chatter(threading.Thread):
    """One client streaming one chat; remembers what it saw before the daemon died."""

    def __init__(self, socket: Path, n_words: int) -> None:
        super().__init__(daemon=True)
        self.socket, self.n_words = socket, n_words
        self.message = f"[[words:{n_words}]] [[slow:0.01]] chat of {n_words}"
        self.result: dict[str, Any] | None = None
        self.conversation_id: str | None = None
        self.failure: BaseException | None = None

    def on_delta(self, method: str, params: dict[str, Any]) -> None:
        self.conversation_id = params.get("conversation_id", self.conversation_id)

    def run(self) -> None:
        try:
            with Client(self.socket, timeout=30) as c:
                self.result = c.call("chat/send", {"message": self.message},
                                     on_notify=self.on_delta)  # fmt: skip
        except (DaemonUnavailable, RpcError, OSError) as e:
            self.failure = e


def check_database(path: Path, chatters: list[Chatter]) -> None:
    """The file opens, passes integrity_check, holds every finished turn complete, and
    holds every unfinished question with an answer that is absent or a true prefix."""
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        assert db.execute("PRAGMA integrity_check").fetchall()[0][0] == "ok"
        for ch in chatters:
            if ch.result is not None:
                rows = db.execute("SELECT role, content, status FROM messages WHERE "
                                  "conversation_id=? ORDER BY seq",
                                  (ch.result["conversation_id"],)).fetchall()  # fmt: skip
                assert [tuple(r) for r in rows] == [
                    ("user", ch.message, "complete"),
                    ("assistant", words(ch.n_words), "complete"),
                ]
                assert ch.result["text"] == words(ch.n_words)
            elif ch.conversation_id is not None:  # it streamed, then the daemon died
                rows = db.execute("SELECT role, content, status FROM messages WHERE "
                                  "conversation_id=? ORDER BY seq",
                                  (ch.conversation_id,)).fetchall()  # fmt: skip
                assert tuple(rows[0]) == ("user", ch.message, "complete")
                for r in rows[1:]:
                    assert r["role"] == "assistant"
                    assert r["status"] in ("complete", "partial")
                    assert words(ch.n_words).startswith(r["content"])
        for conv in db.execute("SELECT id FROM conversations").fetchall():
            roles = [
                r[0]
                for r in db.execute(
                    "SELECT role FROM messages WHERE conversation_id=? ORDER BY seq", (conv[0],)
                )
            ]
            assert roles[:1] == ["user"], f"conversation {conv[0]} lost its question: {roles}"
    finally:
        db.close()


def test_kill_9_during_50_streams_loses_nothing_finished(make_daemon: Any,
                                                         upstream: Upstream) -> None:  # fmt: skip
    """After each of three kill -9s during 50 concurrent streams, the database is sound,
    every turn that returned is stored complete, and a restarted daemon serves it."""
    config = fake_provider_config(upstream)
    finished_total = 0
    for round_no in range(ROUNDS):
        d: Daemon = make_daemon(config)
        db_path = Path(d.call("daemon/status")["data_dir"]) / "conversations.sqlite3"
        d.call("chat/send", {"message": "warm up"})  # the provider SDK loads on first use
        # 20..216 words at 10 ms a word: the short ones finish before the kill, the long ones not.
        chatters = [Chatter(d.socket, 20 + 4 * i) for i in range(CHATS)]
        for ch in chatters:
            ch.start()
        # Kill once a few have finished: the rest are mid-stream (or not yet started).
        deadline = time.monotonic() + 20
        while sum(ch.result is not None for ch in chatters) < 5 + 5 * round_no:
            assert time.monotonic() < deadline, [ch.failure for ch in chatters]
            time.sleep(0.005)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        for ch in chatters:
            ch.join(30)
        assert not any(ch.is_alive() for ch in chatters)
        finished = [ch for ch in chatters if ch.result is not None]
        streaming = [ch for ch in chatters if ch.result is None and ch.conversation_id]
        assert finished, "no chat finished before the kill: the timing is off"
        assert streaming, "every chat finished before the kill: the timing is off"
        finished_total += len(finished)
        check_database(db_path, chatters)

        # A new daemon on the same data serves: the lists match and a broken-off
        # conversation can go on (its unanswered question is replaced).
        d2: Daemon = make_daemon(config)
        listing = d2.call("conversations/list", {"limit": 1000})
        assert listing["total"] == sum(1 for _ in listing["conversations"])
        ids = {c["id"] for c in listing["conversations"]}
        assert {ch.result["conversation_id"] for ch in finished if ch.result} <= ids
        cid = streaming[0].conversation_id
        r = d2.call("chat/send", {"message": "still there?", "conversation_id": cid})
        assert r["text"] == "You said: still there?"
        roles = [m["role"] for m in d2.call("conversations/get", {"id": cid})["messages"]]
        assert roles[-2:] == ["user", "assistant"]
        d2.stop()
    assert finished_total >= ROUNDS
