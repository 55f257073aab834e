"""The protocol doc is true to the code: its method reference is generated from the
registry, and every method the contract names is served."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from assistantd import protodoc
from assistantd.daemon import Daemon
from tests.conftest import ROOT

DOC = ROOT / "docs" / "protocol.md"


def test_generated_reference_is_current() -> None:
    """docs/protocol.md holds exactly what `python -m assistantd.protodoc` generates."""
    doc = DOC.read_text()
    assert protodoc.splice(doc, protodoc.generate()) == doc, "run: python -m assistantd.protodoc"


def test_every_contract_method_is_served() -> None:
    """Each method the contract lists is registered in the daemon."""
    contract = DOC.read_text().partition("## Method reference")[0]
    named = set(re.findall(r"^- `([a-z]+/[a-zA-Z]+)", contract, flags=re.M))
    named |= set(
        re.findall(r"^- `[a-z]+/[a-zA-Z]+[^`]*` / `([a-z]+/[a-zA-Z]+)", contract, flags=re.M)
    )
    with tempfile.TemporaryDirectory() as tmp:
        d = Daemon(Path(tmp) / "s", Path(tmp) / "c.toml", Path(tmp))
    assert named and named - set(d.registry.methods) == set()


def test_config_examples_parse() -> None:
    """Every TOML example in the README and the protocol doc is a valid config."""
    from assistantd import settings

    for doc in (ROOT / "README.md", DOC):
        blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S)
        assert blocks, doc
        for block in blocks:
            settings.parse(block, str(doc))
