"""assistantctl builds only the chat subcommand's parser for a chat line: the same parse
as the whole parser's, for every form of chat line, and the whole parser otherwise."""

from __future__ import annotations

import pytest

from assistantd.cli import command_of, parser

CHAT_LINES = [
    ["chat", "hello", "world"],
    ["chat"],
    ["--socket", "/tmp/s.sock", "chat", "-m", "gpt-4.1", "hi"],
    ["--socket=/tmp/s.sock", "--no-autostart", "chat", "--json", "hi"],
    ["--raw", "chat", "-c", "c123", "--logprobs", "2", "-v", "more", "words"],
    ["--json", "chat", "-a", "-", "--type", "text/plain", "-r", "shell-command", "x"],
    ["--socket", "chat", "chat", "--", "-not an option"],
]


@pytest.mark.parametrize("argv", CHAT_LINES)
def test_a_chat_line_parses_alike(argv: list[str]) -> None:
    """Each chat line gives the same namespace from the chat-only parser as from the whole."""
    assert command_of(argv) == "chat"
    assert vars(parser(chat_only=True).parse_args(argv)) == vars(parser().parse_args(argv))


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["conversations", "list"], "conversations"),
        (["--sock", "/tmp/s", "chat", "hi"], None),  # abbreviated: unsure, so all are built
        (["-h"], None),
        ([], None),
        (["--socket", "/tmp/s"], None),
        (["doctor", "chat"], "doctor"),
    ],
)
def test_anything_else_gets_the_whole_parser(argv: list[str], command: str | None) -> None:
    """A line that is not plainly a chat line is read by the whole parser."""
    assert command_of(argv) == command


def test_the_chat_only_parser_refuses_other_commands() -> None:
    """Built for chat alone, the parser knows no other subcommand (so main never uses it
    for one)."""
    with pytest.raises(SystemExit):
        parser(chat_only=True).parse_args(["doctor"])
