"""errors: the error classes are exactly the protocol doc's error table (in-process)."""

from __future__ import annotations

import re
from pathlib import Path

from assistantd import errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def table() -> dict[int, str]:
    rows = re.findall(r"^\| (-32\d\d\d) \| ([a-zA-Z ]+?) \|", DOC.read_text(), re.M)
    return {int(code): name for code, name in rows}


def test_every_documented_error_has_one_class_and_every_class_is_documented() -> None:
    """Each row of the error table maps to one RpcError class with that code and name."""
    classes = {cls.code: cls.name for cls in errors.RpcError.__subclasses__()}
    assert classes == table()
