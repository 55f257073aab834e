"""A first end-to-end check: chat through a real daemon to the loopback upstream."""

from tests.conftest import Daemon


def test_chat_streams_and_stores(daemon: Daemon) -> None:
    """chat/send streams deltas whose concatenation is the stored answer."""
    deltas: list[str] = []
    with daemon.client() as c:
        r = c.call(
            "chat/send", {"message": "hello world"}, on_notify=lambda m, p: deltas.append(p["text"])
        )
    assert r["text"] == "You said: hello world" == "".join(deltas)
    conv = daemon.call("conversations/get", {"id": r["conversation_id"]})
    assert [m["role"] for m in conv["messages"]] == ["user", "assistant"]
