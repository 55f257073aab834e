"""The config as the daemon loads it: the file's schema (``config``) plus the checks that
need the rest of the package (which models the roles can reach). ``config`` imports no
other module of the package, so every module can import it."""

from __future__ import annotations

from pathlib import Path

from assistantd import config, roles
from assistantd.config import Config, ConfigError


def checked(cfg: Config, text: str, name: str) -> Config:
    problems = roles.check(cfg, text, name)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def parse(text: str, name: str = "config.toml") -> Config:
    """``text`` validated as a config file named ``name``: schema and cross-checks."""
    return checked(config.parse(text, name), text, name)


def load(path: Path) -> Config:
    """The config at ``path``, validated; a missing file is the empty config."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    return parse(text, str(path))
