"""Every pydantic model of the daemon is built at first use (``models.Model``), so a model
that cannot be built would only fail when a request first used it: each is built here."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import assistantd
from assistantd.models import Model


def all_models() -> list[type[Model]]:
    for info in pkgutil.iter_modules(assistantd.__path__):
        if info.name != "__main__":
            importlib.import_module(f"assistantd.{info.name}")
    found: list[type[Model]] = []
    todo = list(Model.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


MODELS = all_models()


def test_models_are_deferred_until_used() -> None:
    """Importing the daemon builds none of its methods' params and results (what a cold
    start saves), in a fresh interpreter. (Config sections that are a default value of
    another are built by that default.)"""
    probe = (
        "import assistantd.daemon\n"
        "from assistantd.rpc import Params, Result\n"
        "todo, built = [*Params.__subclasses__(), *Result.__subclasses__()], []\n"
        "while todo:\n"
        "    c = todo.pop(); todo += c.__subclasses__()\n"
        "    built += [c.__qualname__] if c.__pydantic_complete__ else []\n"
        "print(sorted(built))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
    assert len(MODELS) > 40


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_each_model_builds(cls: type[Model]) -> None:
    """Built on demand, each model has a validator and a JSON schema."""
    assert cls.model_rebuild(force=True) is not False
    assert cls.__pydantic_complete__
    assert isinstance(cls.model_json_schema(), dict)
