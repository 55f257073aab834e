"""Every pydantic model of the daemon is built at first use (``models.Model``), so a model
that cannot be built would only fail when a request first used it: each is built here."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import assistantd
from assistantd.models import Model
from tests.conftest import ROOT


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
    start saves), in a fresh interpreter."""
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


def test_the_daemon_loads_no_pydantic_plugin(tmp_path: Path) -> None:
    """A pydantic plugin installed beside the daemon (an entry point in the ``pydantic``
    group) would see every value it validates, API keys included: the daemon, run as
    its command runs, never imports one. The same plugin is loaded by a plain script
    that builds a validator, so the fake is one pydantic finds."""
    dist = tmp_path / "fakeplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nfake = fakeplug_mod:plugin\n")
    marker = tmp_path / "loaded"
    (tmp_path / "fakeplug_mod.py").write_text(
        f"open({str(marker)!r}, 'a').write('loaded')\n"
        "class Plugin:\n"
        "    def new_schema_validator(self, *args, **kwargs):\n"
        "        return None, None, None\n"
        "plugin = Plugin()\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    daemon = subprocess.run(
        [sys.executable, "-m", "assistantd", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert daemon.returncode == 0 and "assistantd" in daemon.stdout, daemon.stderr
    assert not marker.exists()
    script = "from pydantic import BaseModel\nclass A(BaseModel):\n    x: int = 0\nA()\n"
    control = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert control.returncode == 0, control.stderr
    assert marker.read_text() == "loaded"


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_each_model_builds(cls: type[Model]) -> None:
    """Built on demand, each model has a validator and a JSON schema."""
    assert cls.model_rebuild(force=True) is not False
    assert cls.__pydantic_complete__
    assert isinstance(cls.model_json_schema(), dict)
