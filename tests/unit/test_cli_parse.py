"""assistantctl builds only the chat subcommand's parser for a chat line, and reads a plain
chat line (no option) without argparse: the same parse as the whole parser's, for every
form of chat line, and the whole parser otherwise."""

from __future__ import annotations

import pytest

from assistantd.cli import command_of, parser, quick_chat

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


PLAIN_CHAT_LINES = [
    ["chat", "hello"],
    ["chat", "what", "is", "the", "capital", "of", "Japan?"],
    ["chat", "two words in one", "", "x=y", "日本の首都は", "chat", "a-b", "1"],
]


@pytest.mark.parametrize("argv", PLAIN_CHAT_LINES)
def test_a_plain_chat_line_parses_alike_without_argparse(argv: list[str]) -> None:
    """A chat line of words alone gives argparse's namespace, every name and value."""
    quick = quick_chat(argv)
    assert quick is not None
    assert vars(quick) == vars(parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["chat"],  # the REPL
        ["chat", "-v", "hi"],
        ["chat", "hi", "-m", "x"],
        ["chat", "--", "-not an option"],
        ["chat", "-"],
        ["chat", "-1"],
        ["--json", "chat", "hi"],
        ["--socket", "/tmp/s", "chat", "hi"],
        ["chats", "hi"],
        ["doctor"],
        [],
    ],
)
def test_any_other_line_is_left_to_argparse(argv: list[str]) -> None:
    """An option anywhere, a REPL, or another command: argparse reads the line."""
    assert quick_chat(argv) is None
