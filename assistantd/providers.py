"""OpenAI-compatible providers: presets merged with the config, routing by model name,
keys (keyring, then env var), one warm connection per provider (its HTTP client, and the
SDK's client on it once imported), and one completion call, sent in plain HTTP or through
the SDK, with retries before the first token and errors mapped to the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import importlib
import json
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from assistantd import __version__, errors, keystore, tokens
from assistantd.config import PRESETS, Config, LocalConfig, ProviderConfig
from assistantd.network import BadNetworkConfig, Network
from assistantd.prompt import Guard, TokenFilter
from assistantd.threads import off_loop

if TYPE_CHECKING:
    import httpx2
    import openai

log = logging.getLogger("assistantd.providers")

RETRIES = 2  # extra attempts before the first token, for 429, 5xx and connect errors
MAX_RETRY_WAIT_S = 20.0


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    models: tuple[str, ...]
    key_env: str | None
    needs_key: bool
    context_window: int | None
    kind: str
    managed: bool = False
    timeout_s: float = 120.0
    max_tokens: int | None = None  # an answer's length when the request names none
    stream_options: bool = True  # takes stream_options.include_usage
    logprobs: bool = True  # takes logprobs / top_logprobs
    pdf_input: bool = False  # takes PDFs as file parts (else: their extracted text)
    custom_models: bool = False  # its ``models`` patterns are the config's, not a preset's

    @property
    def local(self) -> bool:
        return self.kind != "openai" or self.managed


def build(config: Config) -> dict[str, Provider]:
    """Presets, overridden and extended key by key by the config, plus ``[local.*]``."""
    out: dict[str, Provider] = {}
    names = list(PRESETS) + [n for n in config.providers if n not in PRESETS]
    for name in names:
        merged: dict[str, Any] = dict(PRESETS.get(name, {}))
        if name in config.providers:
            merged.update(config.providers[name].model_dump(exclude_none=True))
        if "base_url" not in merged:
            continue  # a table that only tunes a preset that does not exist: nothing to route to
        out[name] = Provider(
            name=name,
            base_url=merged["base_url"].rstrip("/"),
            models=tuple(merged.get("models") or ()),
            key_env=merged.get("key_env"),
            needs_key=merged.get("needs_key", True),
            context_window=merged.get("context_window"),
            kind=merged.get("kind", "openai"),
            timeout_s=merged.get("timeout_s") or config.network.timeout_s or 120.0,
            stream_options=merged.get("stream_options", True),
            logprobs=merged.get("logprobs", True),
            pdf_input=merged.get("pdf_input", False),
            custom_models=config.providers.get(name, ProviderConfig()).models is not None,
        )
    for name, lc in config.local.items():
        out[name] = local_provider(name, lc)
    return out


def local_provider(name: str, lc: LocalConfig) -> Provider:
    return Provider(
        name=name,
        base_url="",  # filled in by the local server manager when it starts
        models=tuple(lc.models or [lc.alias or name]),
        key_env=None,
        needs_key=False,
        context_window=None,
        kind="llama-server",
        managed=True,
        custom_models=True,
        timeout_s=600.0,
        max_tokens=lc.max_tokens,
    )


@dataclass
class Completion:
    """What a completion produced so far: filled while streaming, read after a cancel."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    got_logprobs: bool = False
    started: bool = False  # a token arrived: no more retries
    warnings: list[str] = field(default_factory=list)  # what the provider could not do
    logprobs_dropped: bool = False  # asked for, not sent: the provider does not take them


class ContextExceeded(Exception):
    """The provider said the prompt does not fit its context window."""


class StreamBroken(Exception):
    """The stream broke off after it started; ``error`` is the mapped protocol error."""

    def __init__(self, error: errors.RpcError) -> None:
        super().__init__(error.message)
        self.error = error


class UpstreamFailure(Exception):
    """A provider's failure, whichever client met it (the SDK's errors are converted into
    these): what the retries and the mapping to the contract's errors read. ``status`` is
    the HTTP status, None for an error sent inside a stream."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status_code, self.body = message, status, body
        self.retry_after = retry_after  # the Retry-After header, as sent

    @classmethod
    def from_response(cls, status: int, text: str, retry_after: str | None) -> UpstreamFailure:
        """An HTTP error answer, read as the SDK reads one: ``body`` is the JSON's
        ``error`` object (or the JSON, or the text), the message names its ``message``."""
        message = f"Error code: {status}"
        body: Any = text.strip()
        try:
            body = json.loads(body)
        except ValueError:
            pass
        else:
            if isinstance(body, dict):
                body = body.get("error", body)
            said = body.get("message") if isinstance(body, dict) else None
            if isinstance(said, str) and said:
                message += f" - {said}"
        return cls(message, status=status, body=body, retry_after=retry_after)


class ConnectionFailed(UpstreamFailure):
    """No answer: refused, reset, a TLS or name failure."""

    reason = "connection failed"


class TimedOut(ConnectionFailed):
    """No answer in time."""

    reason = "timed out"


def sdk_failure(e: BaseException) -> UpstreamFailure | None:
    """The SDK's error ``e`` as an ``UpstreamFailure`` (None if it is not one of them).
    The SDK may be half imported (on its thread) when a plain-HTTP request fails: then
    ``openai`` has no ``APIError`` yet, and ``e`` cannot be one."""
    openai = sys.modules.get("openai")
    api_error = getattr(openai, "APIError", None)
    if api_error is None or not isinstance(e, api_error):
        return None
    assert openai is not None  # it made e, so it has the classes imported with APIError
    if isinstance(e, openai.APITimeoutError):
        return TimedOut(e.message)
    if isinstance(e, openai.APIConnectionError):
        return ConnectionFailed(e.message)
    if isinstance(e, openai.APIStatusError):
        return UpstreamFailure(
            e.message,
            status=e.status_code,
            body=e.body,
            retry_after=e.response.headers.get("retry-after"),
        )
    return UpstreamFailure(e.message, body=e.body)


OnDelta = Callable[[str, list[dict[str, Any]] | None], Awaitable[None]]
BaseUrlHook = Callable[[Provider], Awaitable[str]]
T = TypeVar("T")


KIND_NAMES = {"lmstudio": "LM Studio", "ollama": "Ollama", "llama-server": "llama-server"}


def not_running(kind: str, base_url: str) -> str:
    """'LM Studio is not running on localhost:1234'."""
    where = urlsplit(base_url).netloc or base_url
    return f"{KIND_NAMES.get(kind, kind)} is not running on {where}"


# What the first request through the SDK (an answer not streamed, a model list) imports
# lazily beyond ``openai`` itself (openai 3.57: 80 modules, 70 ms); missing ones skipped.
SDK_MODULES = (
    "openai",
    "openai.resources.chat.chat",
    "openai.resources.chat.completions.completions",
    "openai.resources.models",
    "openai.types.chat.completion_create_params",
    "openai.lib.streaming.chat",
    "httpcore2",
    "httpcore2._async.connection_pool",
    "httpcore2._async.http11",
    "httpcore2._backends.anyio",
    "h11",
    "anyio._backends._asyncio",
    "anyio.streams.tls",
    "jiter",
    "truststore",
)


def import_sdk() -> float:
    """Import the ``openai`` SDK and what its first request would import lazily (1.1-1.4 s
    on a slow machine); seconds taken. Runs off the event loop."""
    import importlib

    t0 = time.perf_counter()
    for name in SDK_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            if name == "openai":
                raise
    return time.perf_counter() - t0


class Providers:
    def __init__(
        self,
        config: Config,
        base_url_hook: BaseUrlHook | None = None,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        """``transport``, when given, carries every provider's requests (a seam for tests,
        e.g. ``httpx2.MockTransport``); None, the daemon's case, builds each client's own."""
        self.config = config
        self._transport = transport
        self.by_name = build(config)
        self.network = Network.from_config(config.network)
        self._clients: dict[str, Connection] = {}
        self._https: dict[Network, httpx2.AsyncClient] = {}
        self._keys: dict[str, tuple[str | None, str]] = {}
        self._key_locks: dict[str, asyncio.Lock] = {}
        self._base_url_hook = base_url_hook
        self.keyring_error: str | None = None
        self.window_hints: dict[tuple[str, str], int] = {}
        self.on_usage: Callable[[Provider, str, dict[str, int]], None] | None = (
            None  # learned, e.g. from llama-server /props
        )
        self._sdk: asyncio.Future[float] | None = None
        self.sdk_import_s: float | None = None  # how long the SDK took to import, once it did
        self._building = asyncio.Lock()  # one client built at a time, off the loop
        # Set by the local server manager: each managed server's API key and prompt guard
        # (stop sequences, template tokens), and whether it is ready (else a request starts it).
        self.local_keys: dict[str, str] = {}
        self.guards: dict[str, Guard] = {}
        self.local_ready: Callable[[str], bool] = lambda name: True

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.by_name = build(config)
        self.network = Network.from_config(config.network)  # clients are rebuilt on change
        self.forget_keys()

    def forget_keys(self, provider: str | None = None) -> None:
        if provider is None:
            self._keys.clear()
        else:
            self._keys.pop(provider, None)

    # -- routing -------------------------------------------------------------------

    def get(self, name: str) -> Provider:
        try:
            return self.by_name[name]
        except KeyError:
            raise errors.NotFound(f"no provider named {name!r}", kind="provider", id=name) from None

    def route(self, model: str, provider: str | None = None) -> Provider:
        """``provider`` if given; else the first provider whose patterns match, the
        config's own ``models`` patterns before the presets'; else ``default_provider``
        when the config names one; else a broad pattern (openrouter's ``*/*``); else
        openai. So a built-in pattern never takes a model the config routes elsewhere,
        and ``*/*`` never takes one the config's default provider would get."""
        if provider:
            return self.get(provider)
        ordered = sorted(self.by_name.values(), key=lambda p: not p.custom_models)
        for p in ordered:
            if any(fnmatch.fnmatchcase(model, pat) for pat in p.models if not _broad(pat)):
                return p
        if self.config.default_provider:
            return self.get(self.config.default_provider)
        for p in ordered:
            if any(fnmatch.fnmatchcase(model, pat) for pat in p.models if _broad(pat)):
                return p
        return self.get("openai")

    def context_window(self, provider: Provider, model: str) -> int:
        mc = self.config.models.get(model)
        if mc and mc.context_window:
            return mc.context_window
        if hint := self.window_hints.get((provider.name, model)) or self.window_hints.get(
            (provider.name, "*")
        ):
            return hint
        return provider.context_window or tokens.known_window(model) or tokens.DEFAULT_WINDOW

    # -- keys and clients ----------------------------------------------------------

    async def key(self, p: Provider) -> tuple[str | None, str]:
        """(key, source): keyring first, then the env var; source is keyring/env/none."""
        if p.name in self._keys:
            return self._keys[p.name]
        # One lookup at a time per provider: a request and the start-up's prepare asking
        # together share one keyring call (the cold path's slowest step).
        async with self._key_locks.setdefault(p.name, asyncio.Lock()):
            if p.name in self._keys:
                return self._keys[p.name]
            return await self._look_up(p)

    async def _look_up(self, p: Provider) -> tuple[str | None, str]:
        found: tuple[str | None, str] = (None, "none")
        try:
            value = await keystore.get_key(p.name)
            self.keyring_error = None
            if value:
                found = (value, "keyring")
        except keystore.KeyringUnavailable as e:
            self.keyring_error = str(e)
            log.warning("%s; falling back to environment variables", e)
        if found[0] is None and (value := keystore.env_key(p.key_env)):
            found = (value, "env")
        if found[0] is not None or not p.needs_key:
            self._keys[p.name] = found  # keyless servers too: no keyring call per request
        return found

    def warm(self) -> asyncio.Future[float]:
        """Start importing the SDK on its own thread, once."""
        if self._sdk is None:
            self._sdk = off_loop(import_sdk, "assistantd-sdk")

            def done(fut: asyncio.Future[float]) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    return
                self.sdk_import_s = fut.result()
                log.info(
                    "openai SDK imported in %.0f ms on thread assistantd-sdk, off the event loop",
                    self.sdk_import_s * 1000,
                )

            self._sdk.add_done_callback(done)
        return self._sdk

    async def sdk(self) -> None:
        """Wait for the SDK's import (started now if the daemon has not yet)."""
        await asyncio.shield(self.warm())

    @property
    def sdk_state(self) -> Literal["not_loaded", "importing", "ready", "failed"]:
        fut = self._sdk
        if fut is None:
            return "not_loaded"
        if not fut.done():
            return "importing"
        return "failed" if fut.cancelled() or fut.exception() else "ready"

    @property
    def sdk_ready(self) -> bool:
        return self.sdk_state == "ready"

    def stream_via_sdk(self) -> bool:
        """Whether a streamed completion goes through the SDK (``streaming`` in the config)."""
        return self.config.streaming == "sdk"

    async def prepare(self, p: Provider) -> None:
        """Build ``p``'s connection (its key read, its HTTP client and TLS context made:
        80-120 ms) ahead of its first request, off the loop; and its SDK client too once
        the SDK is imported. A provider that cannot have one yet (no key, a managed
        server that is not running) is left for its first request to report."""
        if p.managed:
            return  # building its client would start the server
        try:
            await (self.client(p) if self.sdk_ready else self.connection(p, keyring=False))
        except errors.RpcError as e:
            log.info("no client prepared for %s: %s", p.name, e.message)

    async def connection(self, p: Provider, *, keyring: bool = True) -> Connection:
        """``p``'s key and HTTP client (no SDK needed), each made once: a client per
        network setting, a key per provider. On a cold daemon the client (httpx2's import,
        a TLS context) comes first, then the key (keyring's import, a D-Bus call): both
        are mostly Python holding the GIL, and made at the same time on two threads they
        took 30-50 ms longer than one after the other. With ``keyring=False``, a keyless
        provider whose key has not been read yet gets none from the keyring
        (``_key_or_none``)."""
        net = Network() if p.managed else self.network
        http = await self._http(net, p)
        if p.managed:  # its key is the random one it was started with: no keyring call
            base_url = await self._base_url_hook(p) if self._base_url_hook else p.base_url
            key = self.local_keys.get(p.name, "no-key")
        else:
            key, base_url = await self._key_or_none(p, keyring), p.base_url
        ident = (base_url, key, p.timeout_s, net.connect_timeout_s)
        cached = self._clients.get(p.name)
        if cached is None or cached.ident != ident or cached.http is not http:
            cached = self._clients[p.name] = Connection(ident, http)
        return cached

    def _key_unread(self, p: Provider) -> bool:
        """Whether ``p`` is a keyless provider whose key the keyring has not been asked
        for yet (so its requests go without one; see ``_key_or_none``)."""
        return not (p.managed or p.needs_key or p.name in self._keys)

    async def _key_or_none(self, p: Provider, keyring: bool = True) -> str:
        if not keyring and self._key_unread(p):
            # A keyless provider's streamed request does not wait for the keyring (its
            # import and a D-Bus call: 50-60 ms of a cold daemon's first answer; seconds,
            # if the keyring is locked or hung). Its key is read when the provider asks
            # for one (401/403: ``complete`` reads it and sends the request again), or
            # when anything else reads keys (the SDK's client, built once the daemon is
            # idle; ``keys/list``; ``providers/list``).
            key, source = keystore.env_key(p.key_env), "env"
        else:
            key, source = await self.key(p)
        if key is not None:
            if not keystore.sendable(key):
                where, fix = (
                    (f"${p.key_env}", f"fix ${p.key_env}, or store one with")
                    if source == "env"
                    else ("the keyring", "set it again with")
                )
                raise errors.NoApiKey(
                    f"{p.name}'s key in {where} cannot go in an HTTP header (it holds a space, "
                    f"a control character or a non-ASCII one): {fix} "
                    f"`assistantctl keys set {p.name}`",
                    provider=p.name,
                    reason="bad_key",
                )
            return key
        if p.needs_key:
            where = f" or ${p.key_env}" if p.key_env else ""
            raise errors.NoApiKey(
                f"no API key for {p.name}: run `assistantctl keys set {p.name}`{where}",
                provider=p.name,
            )
        return "no-key"  # the SDK insists on one; local servers ignore it

    async def _http(self, net: Network, p: Provider) -> httpx2.AsyncClient:
        """The HTTP client for ``net`` (a managed server's is direct: this machine's own,
        never through a proxy), built off the loop once; clients of settings no longer in
        force are closed."""
        if (http := self._https.get(net)) is not None:
            return http
        async with self._building:
            if (http := self._https.get(net)) is not None:  # built meanwhile
                return http
            try:
                http = await off_loop(lambda: _new_http(net, self._transport), "assistantd-client")
            except BadNetworkConfig as e:
                raise errors.UpstreamUnreachable(
                    f"cannot reach {p.name}: {e}", provider=p.name, base_url=p.base_url
                ) from None
            stale = [n for n in self._https if n not in (Network(), self.network)]
            self._https[net] = http
        for n in stale:
            await self._https.pop(n).aclose()
        return http

    async def client(self, p: Provider) -> openai.AsyncOpenAI:
        """``p``'s SDK client, on its connection's HTTP client (one pool for both)."""
        conn = await self.connection(p)
        if conn.sdk is None:
            await self.sdk()
            if conn.sdk is None:  # not made by another request while this one waited
                conn.sdk = conn.sdk_client()
        return conn.sdk

    async def close(self) -> None:
        for http in self._https.values():
            await http.aclose()
        self._https.clear()
        self._clients.clear()

    # -- one completion ------------------------------------------------------------

    async def complete(
        self,
        p: Provider,
        model: str,
        messages: list[dict[str, Any]],
        out: Completion,
        *,
        stream: bool = True,
        on_delta: OnDelta | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        top_logprobs: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        """Run one completion into ``out``. Retries 429/5xx/connect errors until the first
        token; maps every failure to the contract's errors; on cancel, closes the
        upstream stream at once (so the provider stops generating) and re-raises.

        A streamed completion is sent in plain HTTP on the provider's client, as the SDK
        would send it (``streaming = "http"``, the default), or through the SDK
        (``"sdk"``); one not streamed goes through the SDK. Everything after the request
        (reading, retries, errors) is shared."""
        sdk = await self.client(p) if not stream or self.stream_via_sdk() else None
        conn = await self.connection(p, keyring=False) if sdk is None else None
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if top_logprobs is not None and not p.logprobs:
            out.logprobs_dropped = True
            out.warnings.append(
                f"{p.name} does not take logprobs (its config says logprobs = false): "
                "not asked for, logprobs is null"
            )
        elif top_logprobs is not None:
            kwargs["logprobs"] = True
            if top_logprobs > 0:
                kwargs["top_logprobs"] = top_logprobs
        if response_format is not None:
            kwargs["response_format"] = response_format
        if stream and p.stream_options:
            kwargs["stream_options"] = {"include_usage": True}
        guard = self.guard(p)
        if guard is not None and guard.stops:
            kwargs["stop"] = list(guard.stops)
        shown = _Shown(guard.filter(), on_delta) if guard is not None else None
        attempt = 0
        while True:
            try:
                try:
                    if stream:
                        if conn is not None:
                            opened = _open_http(conn, kwargs)
                        else:
                            assert sdk is not None
                            opened = _open_sdk(sdk, kwargs)
                        await self._stream(opened, out, shown.sink if shown else on_delta)
                        if shown is not None:
                            await shown.flush()
                    else:
                        assert sdk is not None
                        await self._once(sdk, kwargs, out)
                finally:
                    if shown is not None:  # also for the partial text of a cancel or a break
                        out.text = "".join(shown.parts) if stream else shown.whole(out.text)
                if out.usage and self.on_usage is not None:
                    self.on_usage(p, model, out.usage)
                if stream and not p.stream_options and out.usage is None:
                    out.warnings.append(
                        f"{p.name} sent no token usage (it does not take stream_options): "
                        "usage and cost are null"
                    )
                return out
            except UpstreamFailure as e:
                if out.started:
                    raise StreamBroken(self._map(p, e)) from None
                if _context_exceeded(e):
                    raise ContextExceeded(str(e)) from None
                sent = conn.ident[1] if conn else sdk.api_key if sdk else ""
                if e.status_code in (401, 403) and conn and self._key_unread(p):
                    # A keyless provider asks for the key not yet read: read it, send again.
                    key, source = await self.key(p)  # read once: no longer unread after
                    if key is not None and key != sent:
                        log.info(
                            "%s asked for a key (%d): sent again with the one from the %s",
                            p.name,
                            e.status_code,
                            source,
                        )
                        conn = await self.connection(p)
                        continue
                if e.status_code == 401:
                    self.forget_keys(p.name)  # a key changed outside us is read afresh next time
                wait = _retry_wait(e, attempt)
                if wait is None or attempt >= RETRIES:
                    raise self._map(p, e, keyless=sent == "no-key") from None
                attempt += 1
                log.info("%s: %s; retry %d in %.1f s", p.name, _what(e), attempt, wait)
                await asyncio.sleep(wait)
            except (ValueError, OSError) as e:  # garbage SSE, a transport error mid-stream
                err: errors.RpcError = errors.UpstreamError(
                    f"{p.name} sent a stream that could not be read: {type(e).__name__}",
                    provider=p.name,
                    status=None,
                )
                if isinstance(e, OSError):
                    err = errors.UpstreamUnreachable(
                        f"lost the connection to {p.name}", provider=p.name, base_url=p.base_url
                    )
                raise StreamBroken(err) if out.started else err from None

    def guard(self, p: Provider) -> Guard | None:
        """A local model's guard: a managed server's own, else the common template tokens."""
        if not p.local:
            return None
        return self.guards.get(p.name) or Guard()

    async def _stream(
        self,
        opened: contextlib.AbstractAsyncContextManager[httpx2.Response],
        out: Completion,
        on_delta: OnDelta | None,
    ) -> None:
        """Stream one completion from the response ``opened`` gives (by the SDK or plain
        HTTP). The body is read raw, one ``json.loads`` per SSE event (a typed chunk per
        event was half the relay's time). Deltas go out through a ``DeltaRelay``, so a
        client that falls behind never holds up the stream: what arrives meanwhile goes
        out as one delta when it catches up."""
        async with opened as response:
            if on_delta is None:
                await self._read(response, out, None)
            else:
                relay = DeltaRelay(on_delta)
                error: Exception | None = None
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(relay.run())
                    try:
                        await self._read(response, out, relay)
                    except Exception as e:  # raised below, once what came before it is sent
                        error = e
                    finally:
                        relay.close()
                if error is not None:
                    raise error
        if out.finish_reason is None:
            raise ValueError("the stream ended without a finish reason")

    async def _read(self, http: httpx2.Response, out: Completion, relay: DeltaRelay | None) -> None:
        """Read the SSE body into ``out``; a transport error is a ``ConnectionFailed``,
        as it is before the answer starts."""
        events = SseEvents()
        body = http.aiter_bytes()
        try:
            async with _transport_errors():
                async for data in body:
                    self._take(events.feed(data), out, relay)
                    # Data already buffered never suspends: yield once per read so that the
                    # relay sends, many streams share the loop, and new requests start.
                    await asyncio.sleep(0)
                    if relay is not None:
                        await relay.room()
            self._take(events.close(), out, relay)
        finally:
            await body.aclose()

    @staticmethod
    def _take(payloads: list[bytes], out: Completion, relay: DeltaRelay | None) -> None:
        """Fold the events' chunks into ``out``, and hand their text and logprobs on."""
        for payload in payloads:
            if payload.startswith(b"[DONE]"):
                continue
            chunk = json.loads(payload)
            if not isinstance(chunk, dict):
                raise ValueError("a stream event that is not an object")
            if chunk.get("error"):  # an error sent inside the stream, as the SDK reads it
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else None
                raise UpstreamFailure(
                    message if isinstance(message, str) and message else "error in the stream",
                    body=error,
                )
            if (usage := chunk.get("usage")) is not None:
                out.usage = _usage(usage)
            choices = chunk.get("choices")
            if not choices:
                continue
            choice = choices[0]
            delta = choice.get("delta")
            text = (delta.get("content") or "") if delta else ""
            lps = None
            logprobs = choice.get("logprobs")
            if logprobs and (content := logprobs.get("content")):
                lps = [_logprob(e) for e in content]
                out.logprobs.extend(lps)
                out.got_logprobs = True
            if text or lps:
                out.started = True
                out.text += text
                if relay is not None:
                    relay.put(text, lps)
            if reason := choice.get("finish_reason"):
                out.finish_reason = reason

    async def _once(
        self, client: openai.AsyncOpenAI, kwargs: dict[str, Any], out: Completion
    ) -> None:
        try:
            res = await client.chat.completions.create(**kwargs)
        except Exception as e:
            raise sdk_failure(e) or e from e
        if res.usage is not None:
            out.usage = _usage(res.usage.model_dump())
        if not res.choices:
            raise ValueError("the answer had no choices")
        choice = res.choices[0]
        out.text = choice.message.content or ""
        out.finish_reason = choice.finish_reason
        if choice.logprobs is not None and choice.logprobs.content:
            out.logprobs = [_logprob(e.model_dump()) for e in choice.logprobs.content]
            out.got_logprobs = True

    def _map(self, p: Provider, e: Exception, keyless: bool = False) -> errors.RpcError:
        """``e`` (an ``UpstreamFailure``, the SDK's error, or anything) as the contract's
        error; ``keyless``: the request went without a key."""
        e = sdk_failure(e) or e
        if isinstance(e, ConnectionFailed) and p.local:
            if p.managed:  # its base_url is the manager's; the log says why it went away
                message = (
                    f"the local server {p.name} stopped answering "
                    f"(see `assistantctl local logs {p.name}`)"
                )
            elif isinstance(e, TimedOut):
                message = f"{p.name} at {p.base_url} did not answer in time"
            else:
                message = not_running(p.kind, p.base_url)
            return errors.UpstreamUnreachable(message, provider=p.name, base_url=p.base_url)
        if isinstance(e, ConnectionFailed):
            return errors.UpstreamUnreachable(
                f"cannot reach {p.name} at {p.base_url}: {e.reason}",
                provider=p.name,
                base_url=p.base_url,
            )
        if isinstance(e, UpstreamFailure) and e.status_code == 429:
            return errors.RateLimited(
                f"{p.name} is rate limiting (429) after {RETRIES + 1} attempts",
                provider=p.name,
                retry_after=_retry_after(e),
            )
        if isinstance(e, UpstreamFailure) and e.status_code is not None:
            message = _error_message(e)
            if e.status_code == 401 and keyless:
                message = (
                    f"{p.name} asks for an API key (401): run `assistantctl keys set "
                    f"{p.name}`: {message}"
                )
            elif e.status_code == 401:
                message = f"{p.name} refused the API key (401): {message}"
            return errors.UpstreamError(
                keystore.scrub(message),
                status=e.status_code,
                provider=p.name,
                message=keystore.scrub(message),
            )
        return errors.UpstreamError(
            keystore.scrub(f"{p.name}: {e}"), provider=p.name, message=keystore.scrub(str(e))
        )


@dataclass
class Connection:
    """One provider's HTTP client, made without the SDK, and the SDK's client on top of
    it once the SDK is imported: both share one connection pool."""

    ident: tuple[str, str, float, float]  # (base URL, key, timeout, connect timeout)
    http: httpx2.AsyncClient
    sdk: openai.AsyncOpenAI | None = None

    @property
    def url(self) -> str:
        return self.ident[0]

    @property
    def timeout(self) -> httpx2.Timeout:
        """The provider's own timeouts, per request: its client may serve others."""
        import httpx2

        return httpx2.Timeout(self.ident[2], connect=self.ident[3])

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.ident[1]}",
            "Accept": "application/json",
            "User-Agent": f"assistantd/{__version__}",
        }

    def sdk_client(self) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            api_key=self.ident[1],
            base_url=self.url,
            max_retries=0,  # retried here, before the first token only
            timeout=self.timeout,
            http_client=self.http,
        )


MAX_ERROR_BODY = 1024 * 1024  # an error answer is read up to here


@contextlib.asynccontextmanager
async def _transport_errors() -> AsyncIterator[None]:
    """httpx2's transport errors as ``TimedOut``/``ConnectionFailed``, as the SDK has them."""
    import ssl

    import httpx2

    try:
        yield
    except httpx2.TimeoutException as e:
        raise TimedOut("Request timed out.") from e
    except (httpx2.RequestError, ssl.SSLError) as e:
        failed = ConnectionFailed("Connection error.")
        if "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate verify failed" in str(e):
            # Say which: a user behind a TLS-inspecting proxy needs [network] ca_bundle.
            why = str(e).partition("certificate verify failed: ")[2].partition(" (_ssl")[0]
            failed.reason = f"its TLS certificate is not trusted ({why or 'verify failed'})"
        raise failed from e
    except httpx2.HTTPError as e:
        raise OSError(str(e)) from e


@contextlib.asynccontextmanager
async def _open_http(conn: Connection, kwargs: dict[str, Any]) -> AsyncIterator[httpx2.Response]:
    """The streamed request in plain HTTP, as the SDK sends it; an error status is an
    ``UpstreamFailure`` read as the SDK reads one."""
    request = conn.http.build_request(
        "POST",
        f"{conn.url}/chat/completions",
        json={**kwargs, "stream": True},
        headers=conn.headers(),
        timeout=conn.timeout,
    )
    async with _transport_errors():
        response = await conn.http.send(request, stream=True)
    try:
        if response.status_code >= 400:
            body = bytearray()
            async with _transport_errors():
                async for part in response.aiter_bytes():
                    body += part
                    if len(body) > MAX_ERROR_BODY:
                        break
            raise UpstreamFailure.from_response(
                response.status_code,
                body[:MAX_ERROR_BODY].decode("utf-8", "replace"),
                response.headers.get("retry-after"),
            )
        yield response
    finally:
        await response.aclose()


@contextlib.asynccontextmanager
async def _open_sdk(
    client: openai.AsyncOpenAI, kwargs: dict[str, Any]
) -> AsyncIterator[httpx2.Response]:
    """The streamed request through the SDK (request, auth, status errors)."""
    try:
        create = client.chat.completions.with_streaming_response.create
        async with create(**kwargs, stream=True) as response:
            yield response.http_response
    except Exception as e:
        if (failure := sdk_failure(e)) is None:
            raise
        raise failure from e


def _what(e: UpstreamFailure) -> str:
    """``e`` in a word or two, for the log."""
    if isinstance(e, ConnectionFailed):
        return e.reason
    return f"status {e.status_code}" if e.status_code is not None else "error in the stream"


class _Shown:
    """The text of a local model's answer as the user sees it: template tokens removed
    (by ``tokens``) before each delta reaches ``on_delta``."""

    def __init__(self, tokens: TokenFilter, on_delta: OnDelta | None) -> None:
        self.tokens, self.on_delta = tokens, on_delta
        self.parts: list[str] = []

    async def sink(self, text: str, lps: list[dict[str, Any]] | None) -> None:
        shown = self.tokens.feed(text)
        self.parts.append(shown)
        if self.on_delta is not None and (shown or lps):
            await self.on_delta(shown, lps)

    def whole(self, text: str) -> str:
        """A whole answer at once (not streamed)."""
        return self.tokens.feed(text) + self.tokens.flush()

    async def flush(self) -> None:
        """The held-back tail, at the end of the answer (it began no template token)."""
        if rest := self.tokens.flush():
            self.parts.append(rest)
            if self.on_delta is not None:
                await self.on_delta(rest, None)


# How long an idle connection to a provider is kept for the next request. httpx's 5 s
# default dropped it between two messages of a chat (a new TCP and TLS handshake for each,
# one or two round trips before the first token), and after a burst every connection
# expired at once: the next request closed them all, one loop turn each, before it was
# sent (0.5-1.1 s with 100 at once). Go's HTTP client keeps them 90 s, curl 118 s. One a
# server closes sooner (llama-server: after 5 s, `Keep-Alive: timeout=5`) is found closed
# when the next request looks for a connection, and a new one is made.
KEEPALIVE_S = 60.0


def _new_http(
    net: Network, transport: httpx2.AsyncBaseTransport | None = None
) -> httpx2.AsyncClient:
    """An HTTP client for providers, made as the SDK makes its default one (its limits,
    redirects followed; each request sets its provider's timeouts). With ``[network]
    proxy`` its requests go through that proxy (loopback too) except to ``no_proxy``
    hosts; without, the environment's proxy variables count, as for any httpx client.
    ``ca_bundle`` is trusted on top of the default certificates. A ``transport`` given
    replaces all of that (tests only)."""
    import urllib.request

    import httpx2

    timeout = httpx2.Timeout(120.0, connect=net.connect_timeout_s)
    most, idle = 1000, 100  # the SDK's limits, but for how long an idle connection is kept
    limits = httpx2.Limits(
        max_connections=most, max_keepalive_connections=idle, keepalive_expiry=KEEPALIVE_S
    )
    common: dict[str, Any] = {"timeout": timeout, "follow_redirects": True}
    if transport is not None:
        return httpx2.AsyncClient(transport=transport, **common)
    if net.proxy is None and not set(urllib.request.getproxies()) - {"no"}:
        # Plain HTTP/1.1 on asyncio (h1.py says why): it needs neither httpcore nor
        # anyio's backend, so neither is imported before the first answer.
        from assistantd.h1 import H1Transport

        h1 = H1Transport(
            net.ssl_context(), max_connections=most, max_idle=idle, keepalive_s=KEEPALIVE_S
        )
        return httpx2.AsyncClient(transport=h1, **common)
    if net.proxy is not None:
        client = httpx2.AsyncClient(transport=net.transport(limits=limits), **common)
    else:  # the environment's proxies: httpx routes them
        client = httpx2.AsyncClient(
            verify=net.ssl_context(), trust_env=True, limits=limits, **common
        )
    # The first connection would import anyio's asyncio backend on the event loop.
    importlib.import_module("anyio._backends._asyncio")
    return client


def _broad(pattern: str) -> bool:
    """A pattern of wildcards and slashes only (``*/*``): it names no model family."""
    return not pattern.strip("*?/")


def _usage(u: dict[str, Any]) -> dict[str, int]:
    usage = {
        "prompt_tokens": u.get("prompt_tokens") or 0,
        "completion_tokens": u.get("completion_tokens") or 0,
        "total_tokens": u.get("total_tokens") or 0,
    }
    details = u.get("prompt_tokens_details")
    if isinstance(details, dict) and (cached := details.get("cached_tokens")):
        usage["cached_tokens"] = cached
    return usage


def _logprob(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "token": e["token"],
        "logprob": e["logprob"],
        "top_logprobs": [
            {"token": t["token"], "logprob": t["logprob"]} for t in e.get("top_logprobs") or []
        ],
    }


# Characters of answer the relay holds for a client that fell behind before the stream
# waits for it (backpressure up to the provider); below it, queued deltas are joined.
RELAY_BACKLOG = 8 * 1024


class DeltaRelay:
    """Hands a stream's deltas to ``on_delta`` in order, from a task of its own so that
    the stream never waits for the client. While one delta waits for a client that fell
    behind, those arriving meanwhile queue up and then go out together as one delta (its
    text joined, its logprobs in order). Chunks read together (one read of the
    provider's stream) go out as one delta too; a client that keeps up with a provider
    that sends chunk by chunk gets one per chunk."""

    def __init__(self, on_delta: OnDelta) -> None:
        self._on_delta = on_delta
        self._text: list[str] = []
        self._logprobs: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._queued = 0  # what waits for the client, in characters (a logprob counts 32)
        self._room = asyncio.Event()
        self._room.set()

    def put(self, text: str, logprobs: list[dict[str, Any]] | None) -> None:
        self._text.append(text)
        self._queued += len(text)
        if logprobs:
            self._logprobs.extend(logprobs)
            self._queued += 32 * len(logprobs)
        if self._queued > RELAY_BACKLOG:
            self._room.clear()
        self._wake.set()

    async def room(self) -> None:
        """Wait while too much waits for a client that reads nothing: the stream then
        stops reading, so the provider stops generating (and billing) for no one."""
        await self._room.wait()

    def close(self) -> None:
        """No more deltas: ``run`` sends what is queued and returns."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            if not self._text:
                if self._closed:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            text, logprobs = "".join(self._text), self._logprobs or None
            self._text, self._logprobs, self._queued = [], [], 0
            self._room.set()
            await self._on_delta(text, logprobs)


class SseEvents:
    """Server-sent events from a byte stream: each event's ``data`` (its ``data:`` lines
    joined by newlines), as bytes for ``json.loads``. Comments and the ``event``, ``id``
    and ``retry`` fields carry nothing a chat stream needs and are skipped."""

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events that ``chunk`` completes."""
        lines = (self._tail + chunk if self._tail else chunk).split(b"\n")
        self._tail = lines.pop()
        out: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    out.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
        return out

    def close(self) -> list[bytes]:
        """At the end of the stream: an event the stream did not end with a blank line."""
        out = self.feed(b"\n\n") if self._tail or self._data else []
        self._tail = b""
        return out


def _error_message(e: Any) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return str(getattr(e, "message", e))


def _context_exceeded(e: Any) -> bool:
    if getattr(e, "status_code", None) not in (400, 413):
        return False
    text = str(getattr(e, "body", "")) + str(getattr(e, "message", ""))
    return any(
        s in text.lower()
        for s in (
            "context_length_exceeded",
            "context length",
            "context window",
            "exceeds the available context",
        )
    )


def _retry_after(e: UpstreamFailure) -> float | None:
    try:
        return float(e.retry_after) if e.retry_after is not None else None
    except ValueError:
        return None


def _retry_wait(e: UpstreamFailure, attempt: int) -> float | None:
    """Seconds to wait before retrying ``e``, or None when it is not worth a retry."""
    if e.status_code == 429:
        after = _retry_after(e)
        return min(after if after is not None else 2.0**attempt, MAX_RETRY_WAIT_S)
    status = e.status_code
    if isinstance(e, ConnectionFailed) or (status is not None and status >= 500):
        return 0.25 * 2.0**attempt + random.uniform(0, 0.1)
    return None
