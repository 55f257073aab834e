"""argparse's parser and help layout for ``assistantctl``: imported only for a line that
needs argparse (a plain chat line does without it)."""

from __future__ import annotations

import argparse
import os

TYPE_CHECKING = False  # typing costs an import that this client does without
if TYPE_CHECKING:
    from typing import Any


class Formatter(argparse.HelpFormatter):
    """argparse's help layout, sized without ``shutil``: every ``add_argument`` makes a
    formatter, and the default one imports ``shutil`` (3 ms) for the terminal's width."""

    def __init__(self, prog: str) -> None:
        try:
            width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
        except (ValueError, OSError):
            width = 80
        super().__init__(prog, width=max(width, 40) - 2)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with ``Formatter``; its subcommands' parsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)
