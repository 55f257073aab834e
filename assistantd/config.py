"""The TOML config file, validated by pydantic, with errors that name the key and line.

Every key is optional. Built-in provider presets are merged under the user's
``[providers.NAME]`` tables, key by key, so overriding one field keeps the rest.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from assistantd.models import Model


class _Strict(Model):
    model_config = ConfigDict(extra="forbid")


ProviderKind = Literal["openai", "llama-server", "lmstudio", "ollama"]


def _http_url(value: str | None, what: str, example: str) -> str | None:
    """``value`` if it is an http(s) URL with a host (and a port that is a number)."""
    from urllib.parse import urlsplit

    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise ValueError(f"not a URL ({example})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} is an http:// or https:// URL with a host ({example})")
    return value


class ProviderConfig(_Strict):
    base_url: str | None = None
    models: list[str] | None = None
    key_env: str | None = None
    needs_key: bool | None = None
    context_window: int | None = Field(default=None, gt=0)
    kind: ProviderKind | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    # What of the OpenAI API it takes: a param it refuses is not sent (and the result's
    # ``warnings`` says what that left out). Presets set these per provider.
    stream_options: bool | None = None  # stream_options.include_usage on streams
    logprobs: bool | None = None  # logprobs / top_logprobs
    # PDFs as file parts ({"type": "file", "file": {filename, file_data}}); else the
    # text the daemon extracts from them. Presets: the openai one only.
    pdf_input: bool | None = None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return _http_url(value, "a provider's base_url", "http://localhost:1234/v1")


class ModelConfig(_Strict):
    context_window: int | None = Field(default=None, gt=0)
    price_in: float | None = Field(default=None, ge=0)  # USD per million input tokens
    price_cached_in: float | None = Field(default=None, ge=0)
    price_out: float | None = Field(default=None, ge=0)
    # Whether it takes images; default: a table of models known not to, and not for
    # [local.*] servers (assistantd/attachments.py).
    vision: bool | None = None


class LocalConfig(_Strict):
    command: str = "llama-server"
    model: str
    args: list[str] = []
    idle_timeout_s: float = Field(default=600, gt=0)
    alias: str | None = None  # the model name it serves; default: the local server's name
    models: list[str] | None = None
    startup_timeout_s: float = Field(default=120, gt=0)
    max_tokens: int | None = Field(default=None, gt=0)  # an answer's length unless asked
    # The prompt format (assistantd/prompt.py): a llama.cpp built-in template name
    # ("gemma", "chatml", ...), "transcript", or a Jinja file's path. Default: the
    # model's own template, else the one its architecture calls for.
    chat_template: str | None = Field(default=None, min_length=1)


class SummarizeConfig(_Strict):
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    timeout_s: float = Field(default=30, gt=0)
    concurrency: int = Field(default=4, ge=1, le=32)
    max_redirects: int = Field(default=5, ge=0)
    # How long reading a page's text may take (a worker process, killed after it).
    extract_timeout_s: float = Field(default=30, gt=0)
    # Follow redirects from a public page into this machine or a private network.
    allow_private_redirects: bool = False


class NetworkConfig(_Strict):
    """How the daemon reaches providers and pages (``[network]``). A daemon started by
    systemd or launchd does not see the shell's ``HTTPS_PROXY`` or ``SSL_CERT_FILE``;
    these say the same in the config. See assistantd/network.py."""

    # "http://[user:pass@]host:port" (or https://); every provider request and page
    # fetch goes through it, loopback too, except the hosts of no_proxy.
    proxy: str | None = Field(default=None, min_length=1)
    # Hosts reached directly, as in NO_PROXY: "example.com" (and its subdomains),
    # ".example.com" (subdomains only), an IP address, "localhost", "*" (everything).
    no_proxy: list[str] = []
    ca_bundle: str | None = Field(default=None, min_length=1)  # PEM file trusted as well
    timeout_s: float | None = Field(default=None, gt=0)  # connect timeout, and providers' read

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        return _http_url(value, "a proxy", "http://host:port")


class RoleConfig(_Strict):
    """A named prompt every client can use (``[roles.NAME]``); see assistantd/roles.py."""

    system: str | None = Field(default=None, max_length=100_000)  # a new role needs one
    description: str | None = None
    model: str | None = None
    provider: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    compact: Literal["trim", "summarize"] | None = None


class Config(_Strict):
    default_model: str | None = None
    # How a conversation longer than the window goes on: leave out the oldest turns, or
    # summarize them into one stored summary once it passes compact_threshold of the window.
    compact: Literal["trim", "summarize"] = "trim"
    compact_threshold: float = Field(default=0.8, ge=0.2, le=0.95)
    default_provider: str | None = None
    socket: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Who sends a streamed answer's request: the daemon itself, in plain HTTP on the
    # provider's client (measured: a cold first answer without waiting for the SDK's
    # import, and 100 concurrent streams at 1.0x direct where the SDK's request layer
    # costs 2.2x), or the openai SDK. Answers not streamed and model lists always use
    # the SDK, imported in the background once the daemon is quiet.
    streaming: Literal["http", "sdk"] = "http"
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    local: dict[str, LocalConfig] = {}
    # Factories, not instances: an instance here would build validators at import, before
    # the daemon has turned pydantic's plugins off (see __main__.py).
    summarize: SummarizeConfig = Field(default_factory=SummarizeConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    roles: dict[str, RoleConfig] = {}


class ConfigError(Exception):
    """A config that cannot be used; the message names the file, line and key."""


def parse(text: str, name: str = "config.toml") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name}: {e}") from None
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False, include_input=False):
            loc = [str(p) for p in err["loc"]]
            line = locate(text, loc)
            where = f"line {line}" if line else "?"
            problems.append(f"{name}:{where}: {'.'.join(loc)}: {err['msg']}")
        raise ConfigError("; ".join(problems)) from None
    return cfg


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*=')


def _split_key(dotted: str) -> list[str]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', dotted)
    return [a or b or c for a, b, c in parts]


def locate(text: str, loc: list[str]) -> int | None:
    """The 1-based line where the key at ``loc`` is written (best effort), or None."""
    table: list[str] = []
    best: int | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if m := _HEADER.match(line):
            table = _split_key(m.group(1))
            if table and loc[: len(table)] == table and best is None and len(table) == len(loc):
                best = n
            continue
        if m := _KEY.match(line):
            key = table + _split_key(m.group(1))
            if loc[: len(key)] == key:
                return n
    if best is None:  # a missing key: point at its table
        for n, line in enumerate(text.splitlines(), 1):
            if (m := _HEADER.match(line)) and loc[: len(_split_key(m.group(1)))] == _split_key(
                m.group(1)
            ):
                best = n
    return best


# Built-in providers, each overridable key by key in the config.
PRESETS: dict[str, dict[str, Any]] = {
    "openai": {
        "base_url": "https://api.openai.com/v1",
        "models": ["gpt-*", "o1*", "o3*", "o4*", "chatgpt-*"],
        "key_env": "OPENAI_API_KEY",
        "needs_key": True,
        "kind": "openai",
        "pdf_input": True,
    },
    "gemini": {
        "base_url": "https://generativelanguage.googleapis.com/v1beta/openai/",
        "models": ["gemini-*", "gemma-*-it"],
        "key_env": "GOOGLE_API_KEY",
        "needs_key": True,
        "kind": "openai",
    },
    "xai": {
        "base_url": "https://api.x.ai/v1",
        "models": ["grok-*"],
        "key_env": "XAI_API_KEY",
        "needs_key": True,
        "kind": "openai",
    },
    "plamo": {
        "base_url": "https://platform.preferredai.jp/api/completion/v1",
        "models": ["plamo-*"],
        "key_env": "PLAMO_API_KEY",
        "needs_key": True,
        "kind": "openai",
    },
    # Anthropic's OpenAI-compatible endpoint ignores logprobs.
    "anthropic": {
        "base_url": "https://api.anthropic.com/v1/",
        "models": ["claude-*"],
        "key_env": "ANTHROPIC_API_KEY",
        "needs_key": True,
        "kind": "openai",
        "logprobs": False,
    },
    # Its ids are vendor/model: a broad pattern, tried after every other provider's
    # patterns and never over an explicit default_provider (providers.route).
    "openrouter": {
        "base_url": "https://openrouter.ai/api/v1",
        "models": ["*/*"],
        "key_env": "OPENROUTER_API_KEY",
        "needs_key": True,
        "kind": "openai",
    },
    # logprobs and top_logprobs are a 400 there. Most of its model ids are other
    # vendors' (llama-*, qwen/*, openai/*): only its own suffixes route here by default.
    "groq": {
        "base_url": "https://api.groq.com/openai/v1",
        "models": ["*-versatile", "*-instant"],
        "key_env": "GROQ_API_KEY",
        "needs_key": True,
        "kind": "openai",
        "logprobs": False,
    },
    "deepseek": {
        "base_url": "https://api.deepseek.com/v1",
        "models": ["deepseek-*"],
        "key_env": "DEEPSEEK_API_KEY",
        "needs_key": True,
        "kind": "openai",
    },
    # stream_options is a 422 there (the last chunk carries usage anyway); no logprobs.
    "mistral": {
        "base_url": "https://api.mistral.ai/v1",
        "models": [
            "mistral-*",
            "magistral-*",
            "codestral-*",
            "devstral-*",
            "ministral-*",
            "pixtral-*",
            "open-mistral-*",
        ],
        "key_env": "MISTRAL_API_KEY",
        "needs_key": True,
        "kind": "openai",
        "stream_options": False,
        "logprobs": False,
    },
    "lmstudio": {
        "base_url": "http://localhost:1234/v1",
        "models": ["lmstudio*"],
        "needs_key": False,
        "kind": "lmstudio",
    },
    "llama": {
        "base_url": "http://localhost:8080/v1",
        "models": [],
        "needs_key": False,
        "kind": "llama-server",
    },
    "ollama": {
        "base_url": "http://localhost:11434/v1",
        "models": [],
        "needs_key": False,
        "kind": "ollama",
    },
}
