"""Roles: named prompts, with the model and settings to use them with, shared by every
client (``chat/send``'s and ``summarize/*``'s ``role``, ``roles/list``).

A role is built in (the prompts the clients used to carry) or a ``[roles.NAME]`` config
table; a config role of a built-in's name overrides it key by key, as provider presets
are. Roles are looked up in the live config, so a reload applies at the next request.

A system prompt may hold ``{name}`` placeholders: ``chat/send``'s ``vars`` fill them
(the shell clients send ``shell`` and ``os``), the daemon fills ``os`` and ``shell``
when the client does not, and the summarizer fills ``about``. A placeholder with no value
stays as written, so braces in a prompt (code, JSON) need no escaping.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from assistantd import config, errors, llama, pricing
from assistantd.config import Config, RoleConfig
from assistantd.models import Model
from assistantd.rpc import NoParams, RequestContext, Result

BUILTIN: dict[str, RoleConfig] = {
    "shell-command": RoleConfig(
        description="Turn a description into one shell command (the shell widgets' key)",
        system="Turn the user's description into one shell command for {shell} on {os}. "
        "Reply with the command only, no prose, no code fences.",
    ),
    "explain": RoleConfig(
        description="Explain what a shell command does",
        system="Explain briefly what this {shell} command does on {os}: one short paragraph, "
        "then one line per option or part if that helps. Plain text, no Markdown.",
    ),
    "code-edit": RoleConfig(
        description="Rewrite the attached text as the user asks; the reply replaces it",
        system="You rewrite the text given as context according to the user's instruction. "
        "Reply with the replacement text only: no explanation, no code fences.",
    ),
    "summarize": RoleConfig(
        description="Summarize a page or text (summarize/url, summarize/text)",
        system="You SUMMARIZE text{about}. Write a clear, concise summary of its main points "
        "in the language of the text. No preamble.",
    ),
}
SUMMARIZE = "summarize"  # the role summarize/* use unless they are given one

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Role:
    name: str
    source: Literal["builtin", "config"]
    system: str
    description: str | None = None
    model: str | None = None
    provider: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    compact: Literal["trim", "summarize"] | None = None

    def prompt(self, values: Mapping[str, str] | None = None) -> str:
        """The system prompt with its placeholders filled (see ``fill``)."""
        return fill(self.system, values)


def fill(text: str, values: Mapping[str, str] | None = None) -> str:
    """``text`` with its ``{name}`` placeholders filled from ``values``, then from the
    daemon's own defaults (``os``, ``shell``); others stay as written."""
    known = {**default_vars(), **(values or {})}

    def one(m: re.Match[str]) -> str:
        return known.get(m.group(1), m.group(0))

    return _PLACEHOLDER.sub(one, text)


def default_vars() -> dict[str, str]:
    """What the daemon knows of the client's machine (it is the same one)."""
    sysname = os.uname().sysname
    shell = Path(os.environ.get("SHELL", "")).name or "sh"
    return {"os": {"Darwin": "macOS"}.get(sysname, sysname), "shell": shell}


def resolve(config: Config) -> dict[str, Role]:
    """The built-in roles, overridden and extended by the config's, by name."""
    out: dict[str, Role] = {}
    for name in [*BUILTIN, *(n for n in config.roles if n not in BUILTIN)]:
        merged = BUILTIN[name].model_dump(exclude_none=True) if name in BUILTIN else {}
        if name in config.roles:
            merged.update(config.roles[name].model_dump(exclude_none=True))
        source: Literal["builtin", "config"] = "config" if name in config.roles else "builtin"
        out[name] = Role(name=name, source=source, **merged)
    return out


class RoleInfo(Model):
    name: str
    description: str | None
    source: Literal["builtin", "config"]
    system: str
    model: str | None
    provider: str | None
    temperature: float | None
    max_tokens: int | None
    compact: Literal["trim", "summarize"] | None


class RolesResult(Result):
    roles: list[RoleInfo]


class Roles:
    """The roles of the live config (``config`` is read at each call: reloads apply)."""

    def __init__(self, config: Callable[[], Config]) -> None:
        self.config = config

    def all(self) -> dict[str, Role]:
        return resolve(self.config())

    def find(self, name: str | None) -> Role | None:
        """The role ``name``, or None when there is none (any more)."""
        return self.all().get(name) if name else None

    def get(self, name: str) -> Role:
        """The role ``name``; -32004 (kind ``role``) when there is none."""
        role = self.find(name)
        if role is None:
            raise errors.NotFound(f"no role named {name!r}", kind="role", id=name)
        return role

    async def list(self, p: NoParams, ctx: RequestContext) -> RolesResult:
        """Every role: built in or from the config, with its prompt and settings."""
        return RolesResult(
            roles=[
                RoleInfo(
                    name=r.name,
                    description=r.description,
                    source=r.source,
                    system=r.system,
                    model=r.model,
                    provider=r.provider,
                    temperature=r.temperature,
                    max_tokens=r.max_tokens,
                    compact=r.compact,
                )
                for r in self.all().values()
            ]
        )


def check(cfg: Config, text: str, name: str) -> list[str]:
    """What is wrong with the ``[roles.*]`` tables that pydantic cannot see: a new role
    without ``system``, a provider that does not exist, a model nothing routes to."""

    def where(*loc: str) -> str:
        line = config.locate(text, ["roles", *loc])
        return f"{name}:line {line}" if line else f"{name}:?"

    patterns: dict[str, list[str]] = {}
    for pname in [*config.PRESETS, *cfg.providers]:
        merged = {
            **config.PRESETS.get(pname, {}),
            **cfg.providers.get(pname, config.ProviderConfig()).model_dump(exclude_none=True),
        }
        if "base_url" in merged:
            patterns[pname] = list(merged.get("models") or [])
    for pname, lc in cfg.local.items():
        patterns[pname] = list(lc.models or [lc.alias or pname])
    patterns.setdefault(llama.BUILTIN_NAME, [llama.BUILTIN_ALIAS])
    priced = [pat for pat, _ in pricing.BUILT_IN]

    def known(model: str, provider: str | None) -> bool:
        if model in cfg.models:
            return True
        if provider is not None:
            pats = patterns[provider]
            return not pats or any(fnmatch.fnmatchcase(model, p) for p in pats)
        every = [p for pats in patterns.values() for p in pats] + priced
        return any(fnmatch.fnmatchcase(model, p) for p in every)

    problems = []
    for rname, role in cfg.roles.items():
        if role.system is None and rname not in BUILTIN:
            problems.append(
                f"{where(rname)}: roles.{rname}.system: a new role needs a system prompt"
            )
        if role.provider is not None and role.provider not in patterns:
            problems.append(
                f"{where(rname, 'provider')}: roles.{rname}.provider: no provider named "
                f"{role.provider!r}"
            )
        elif role.model is not None and not known(role.model, role.provider):
            why = (
                f"provider {role.provider!r} does not serve it"
                if role.provider
                else "no provider's models patterns match it"
            )
            problems.append(
                f"{where(rname, 'model')}: roles.{rname}.model: unknown model {role.model!r}: "
                f"{why} (add it to a provider's models, name its provider, or give it a "
                "[models] table)"
            )
    return problems
