"""Local model servers: llama-servers the daemon runs itself (``[local.NAME]``, and the
bundled ``gemma`` when the ``local`` extra is installed), and LM Studio, Ollama or a
user's own llama-server, which it only probes.

A managed server starts on the first request that needs it (``Providers`` awaits
``base_url`` for managed providers), on a free loopback port, its output appended to
``local-NAME.log`` in the log folder. It is stopped after its idle timeout, at daemon
shutdown, and, through ``PR_SET_PDEATHSIG``, by the kernel when the daemon dies
without a word (SIGKILL): no orphan is left. A server that dies while in use is
restarted on the same port (so warm clients keep working), at most once a minute by
itself, and again by any request that needs it.

Each managed server has a random API key for its lifetime in the daemon; it is healthy
when ``/health`` answers and an authenticated request is served while one without the
key is refused: a server that is not ours (someone took the port) is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_urlsafe
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

from assistantd import errors, keystore, llama, paths
from assistantd.config import Config, LocalConfig
from assistantd.models import Model
from assistantd.providers import Provider, Providers, not_running
from assistantd.rpc import Params, RequestContext, Result
from assistantd.threads import off_loop

log = logging.getLogger("assistantd.local")

TICK_S = 0.5  # how often the reaper looks at the servers
AUTO_RESTART_GAP_S = 60.0  # a server that keeps dying is restarted by requests only
KEYS_EVERY_S = 15.0  # how often the no-key default re-reads the keyring
STOP_GRACE_S = 5.0


class ServerEntry(Model):
    name: str
    kind: str
    base_url: str
    managed: bool
    state: str  # stopped | starting | ready | failed
    model: str | None
    n_ctx: int | None = None  # the context size the server reports (/props)
    pid: int | None = None  # of a managed server's process
    error: str | None = None


class ServerList(Result):
    servers: list[ServerEntry]


class NameParams(Params):
    name: str


class LogsParams(Params):
    name: str
    lines: int = Field(default=50, ge=1, le=10_000)


class LogsResult(Result):
    name: str
    path: str
    lines: list[str]


@dataclass
class Managed:
    """One managed llama-server and what the daemon knows of it."""

    name: str
    cfg: LocalConfig
    log_path: Path
    notify: Callable[[str, str], None] | None = None  # (name, state) on every change
    _state: str = "stopped"
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    error: str | None = None
    starting: asyncio.Task[None] | None = None
    restarted_at: float = float("-inf")
    n_ctx: int | None = None
    api_key: str = field(default_factory=lambda: token_urlsafe(32))

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value != self._state:
            self._state = value
            if self.notify is not None:
                self.notify(self.name, value)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1" if self.port else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def model(self) -> str:
        return self.cfg.alias or self.name

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def _not_found(name: str) -> errors.NotFound:
    return errors.NotFound(f"no local server named {name!r}", kind="local_server", id=name)


class LocalServers:
    def __init__(self, config: Config) -> None:
        self.builtin = llama.builtin_config()  # None without the ``local`` extra
        self.config = config
        self.servers: dict[str, Managed] = {}
        self.providers: Providers | None = None
        self.on_state: Callable[[str, str], None] | None = None  # the daemon's local/state event
        self._tg: asyncio.TaskGroup | None = None
        self._keyring_keys: set[str] = set()
        self._keys_read_at = float("-inf")
        self._keys_read = False  # whether _keyring_keys has been read since start
        self._keys_lock = asyncio.Lock()
        self._sync()

    # -- config ----------------------------------------------------------------------

    def builtin_active(self, config: Config | None = None) -> bool:
        c = config or self.config
        name = llama.BUILTIN_NAME
        return self.builtin is not None and name not in c.local and name not in c.providers

    def effective(self, config: Config) -> Config:
        """``config`` plus the bundled ``[local.gemma]`` when the extra is installed and
        the user has not defined a ``gemma`` of their own."""
        if not self.builtin_active(config) or self.builtin is None:
            return config
        local = {**config.local, llama.BUILTIN_NAME: self.builtin}
        return config.model_copy(update={"local": local})

    def bind(self, providers: Providers) -> None:
        self.providers = providers
        providers.local_ready = self.ready
        self._sync()

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self._sync()

    def _sync(self) -> None:
        wanted = self.effective(self.config).local
        log_dir = paths.dirs().log
        for name, s in list(self.servers.items()):
            if wanted.get(name) != s.cfg:  # removed or changed: the old one goes
                del self.servers[name]
                self._spawn(self._stop(s, "its config changed"))
        for name, cfg in wanted.items():
            if name not in self.servers:
                self.servers[name] = Managed(name, cfg, log_dir / f"local-{name}.log", self._notify)
            n_ctx = llama.window_from_args(cfg.args)
            if self.providers is not None and n_ctx and self.servers[name].state != "ready":
                self.providers.window_hints[(name, "*")] = n_ctx

    def _notify(self, name: str, state: str) -> None:
        if self.on_state is not None:
            self.on_state(name, state)

    def _spawn(self, coro: Any) -> None:
        if self._tg is not None:
            self._tg.create_task(coro)
        else:
            coro.close()  # not running: there is no process to act on

    # -- the no-key default ----------------------------------------------------------

    def no_key_default(self) -> str | None:
        """The bundled model's name when it is there and no remote provider has a key."""
        if not self.builtin_active() or self.providers is None:
            return None
        for p in self.providers.by_name.values():
            remote = p.needs_key and not p.local
            if remote and (p.name in self._keyring_keys or keystore.env_key(p.key_env)):
                return None
        return llama.BUILTIN_ALIAS

    def keys_decide_default(self) -> bool:
        """Whether the default model depends on which providers have keys."""
        return self.builtin_active() and not self.config.default_model

    async def keys_known(self) -> None:
        """Have the keyring read once, if the default model depends on it: until then a
        cold daemon's first question went to the bundled model even with a provider's
        key stored (a key in an env var was seen at once)."""
        if not self._keys_read and self.keys_decide_default():
            async with self._keys_lock:  # a read in flight is waited for, not repeated
                if not self._keys_read:
                    await self._read_keys()

    async def refresh_keys(self) -> None:
        """Which remote providers have a key in the OS keyring (for ``no_key_default``)."""
        async with self._keys_lock:
            await self._read_keys()

    async def _read_keys(self) -> None:
        self._keys_read_at = time.monotonic()
        if self.providers is None:
            return
        remote = [p.name for p in self.providers.by_name.values() if p.needs_key and not p.local]
        found: set[str] = set()
        # Nothing here may escape into the reaper's TaskGroup (it would stop the daemon).
        try:
            found = await keystore.stored(remote)
        except Exception:
            log.exception("reading which providers have keys")
        self._keyring_keys, self._keys_read = found, True

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """The reaper: idle stops, crash restarts, key refreshes. Owns the start tasks."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                while True:
                    try:
                        await self._tick()
                    except Exception:  # a bug here must not take the daemon down
                        log.exception("local server reaper")
                    await asyncio.sleep(TICK_S)
            finally:
                self._tg = None

    async def _tick(self) -> None:
        now = time.monotonic()
        if self.keys_decide_default() and now - self._keys_read_at > KEYS_EVERY_S:
            self._keys_read_at = now
            self._spawn(self.refresh_keys())  # the keyring may be slow: not in the tick
        for s in list(self.servers.values()):
            if s.state == "ready" and s.proc is not None and s.proc.returncode is not None:
                code = s.proc.returncode
                log.warning("local server %s died (exit %s)", s.name, code)
                s.proc, s.state, s.error = None, "failed", f"llama-server exited with code {code}"
                if now - s.restarted_at > AUTO_RESTART_GAP_S:
                    s.restarted_at = now
                    self._begin_start(s)
            elif s.state == "ready" and now - s.last_used > s.cfg.idle_timeout_s:
                if await self._busy(s):
                    s.last_used = now
                else:
                    await self._stop(s, f"idle for {s.cfg.idle_timeout_s:g} s")

    async def stop_all(self) -> None:
        """Stop every managed server (daemon shutdown)."""
        async with asyncio.TaskGroup() as tg:
            for s in self.servers.values():
                tg.create_task(self._stop(s, "the daemon is stopping"))

    # -- starting and stopping -------------------------------------------------------

    def _managed(self, name: str) -> Managed:
        s = self.servers.get(name)
        if s is None:
            raise _not_found(name)
        return s

    async def base_url(self, p: Provider) -> str:
        """The hook ``Providers`` awaits for a managed provider: starts it when needed."""
        s = self._managed(p.name)
        s.last_used = time.monotonic()
        if s.state != "ready" or not s.alive:
            await self.start(s)
        s.last_used = time.monotonic()
        return s.base_url

    def _begin_start(self, s: Managed) -> asyncio.Task[None] | None:
        if s.starting is None or s.starting.done():
            if self._tg is None:
                return None
            s.starting = self._tg.create_task(self._start_guarded(s))
        return s.starting

    async def start(self, s: Managed) -> None:
        """Start ``s`` (or join a start in progress); -32007 with the log tail if it fails."""
        if s.state == "ready" and s.alive:
            return
        task = self._begin_start(s)
        if task is not None:
            await asyncio.shield(task)  # a cancelled request does not abort the start
        else:
            await self._start_guarded(s)  # no reaper running (embedded use): start inline
        if s.state != "ready":
            log_tail = await off_loop(lambda: llama.tail(s.log_path), "log-tail")
            raise errors.LocalServerFailed(
                f"local server {s.name} did not start: {s.error}",
                name=s.name,
                log_tail=log_tail,
            )

    async def _start_guarded(self, s: Managed) -> None:
        try:
            await self._start(s)
        except errors.LocalServerFailed as e:
            s.state, s.error, s.port = "failed", e.message, None
            log.error("local server %s failed to start: %s", s.name, e.message)
        except Exception as e:  # a bug or an odd OS error must not take the reaper down
            s.state, s.error, s.port = "failed", f"{type(e).__name__}: {e}", None
            log.exception("local server %s failed to start", s.name)

    async def _start(self, s: Managed) -> None:
        s.state, s.error = "starting", None
        if s.proc is not None and s.alive:  # a half-dead leftover
            await llama.stop(s.proc, STOP_GRACE_S)
        s.port = s.port or llama.free_port()  # a restart keeps the port: warm clients keep working
        plan = await asyncio.to_thread(
            llama.plan, s.cfg, s.model, s.port, paths.dirs().cache, s.log_path, s.api_key
        )
        if self.providers is not None:
            self.providers.local_keys[s.name] = s.api_key
            self.providers.guards[s.name] = plan.guard
        s.proc = await llama.spawn(plan)
        log.info("local server %s starting (pid %d, port %d)", s.name, s.proc.pid, s.port)
        try:
            await self._wait_healthy(s, s.proc, plan.missing_model)
        except BaseException:
            await asyncio.shield(llama.stop(s.proc, STOP_GRACE_S))
            s.proc = None
            raise
        s.state, s.last_used = "ready", time.monotonic()
        log.info("local server %s ready at %s", s.name, s.base_url)

    async def _wait_healthy(
        self, s: Managed, proc: asyncio.subprocess.Process, missing: str | None
    ) -> None:
        import httpx2

        root = s.base_url.removesuffix("/v1")
        async with httpx2.AsyncClient(timeout=2.0, headers=s.auth) as http:
            try:
                async with asyncio.timeout(s.cfg.startup_timeout_s):
                    while True:
                        if proc.returncode is not None:
                            why = f"llama-server exited with code {proc.returncode} while starting"
                            if missing:
                                why += f" (no model file at {missing})"
                            raise errors.LocalServerFailed(why)
                        with contextlib.suppress(httpx2.HTTPError):
                            if (await http.get(f"{root}/health")).status_code == 200:
                                break
                        await asyncio.sleep(0.05)
                    await self._check_ours(http, root, proc)
            except TimeoutError:
                raise errors.LocalServerFailed(
                    f"llama-server was not healthy within {s.cfg.startup_timeout_s:g} s"
                ) from None
            s.n_ctx = await self._read_n_ctx(http, root)
        if s.n_ctx and self.providers is not None:
            self.providers.window_hints[(s.name, "*")] = s.n_ctx

    @staticmethod
    async def _check_ours(http: Any, root: str, proc: asyncio.subprocess.Process) -> None:
        """The server at ``root`` is the one started with our key: it serves a request with
        the key and refuses one without (another program on the port does not)."""
        import httpx2

        try:
            with_key = (await http.get(f"{root}/v1/models")).status_code
            without = (
                await http.get(f"{root}/v1/models", headers={"Authorization": ""})
            ).status_code
        except httpx2.HTTPError as e:
            raise errors.LocalServerFailed(f"llama-server stopped answering: {e}") from None
        if with_key != 200 or without != 401 or proc.returncode is not None:
            where = urlsplit(root).netloc
            raise errors.LocalServerFailed(
                f"the server on {where} is not the one assistantd started (with its key: "
                f"{with_key}, without: {without}); another program may hold the port"
            )

    @staticmethod
    async def _read_n_ctx(http: Any, root: str) -> int | None:
        """The server's real context size: ``default_generation_settings.n_ctx`` of ``/props``."""
        try:
            props = (await http.get(f"{root}/props")).json()
            n = props["default_generation_settings"]["n_ctx"]
        except Exception:  # an older or other server: keep the config's figure
            return None
        return n if isinstance(n, int) and n > 0 else None

    async def _busy(self, s: Managed) -> bool:
        """Whether any slot is generating (a long answer is not 'idle')."""
        import httpx2

        try:
            async with httpx2.AsyncClient(timeout=2.0, headers=s.auth) as http:
                slots = (await http.get(f"{s.base_url.removesuffix('/v1')}/slots")).json()
            return any(isinstance(x, dict) and x.get("is_processing") for x in slots)
        except Exception:  # /slots turned off (--no-slots): idle is idle
            return False

    async def _stop(self, s: Managed, why: str) -> None:
        if s.starting is not None and not s.starting.done():
            s.starting.cancel()
            await asyncio.wait([s.starting])
        if s.proc is not None:
            log.info("stopping local server %s (pid %d): %s", s.name, s.proc.pid, why)
            await asyncio.shield(llama.stop(s.proc, STOP_GRACE_S))
        s.proc, s.state, s.port = None, "stopped", None

    # -- methods ---------------------------------------------------------------------

    def _entry(self, s: Managed) -> ServerEntry:
        pid = s.proc.pid if s.proc is not None and s.alive else None
        return ServerEntry(
            name=s.name,
            kind="llama-server",
            base_url=s.base_url,
            managed=True,
            state=s.state,
            model=s.model,
            n_ctx=s.n_ctx if pid else None,
            pid=pid,
            error=s.error,
        )

    def state(self, name: str) -> str:
        s = self.servers.get(name)
        return s.state if s is not None else "stopped"

    def ready(self, name: str) -> bool:
        """Whether the managed server ``name`` answers now (a request need not start it)."""
        s = self.servers.get(name)
        return s is not None and s.state == "ready" and s.alive

    async def probe(self, p: Provider) -> ServerEntry:
        """An unmanaged server: ready when its ``GET /v1/models`` answers, else stopped."""
        import httpx2

        entry = ServerEntry(
            name=p.name,
            kind=p.kind,
            base_url=p.base_url,
            managed=False,
            state="stopped",
            model=None,
        )
        try:
            async with httpx2.AsyncClient(timeout=httpx2.Timeout(3.0, connect=1.0)) as http:
                r = await http.get(f"{p.base_url}/models")
                data = r.json().get("data") if r.status_code == 200 else None
                if p.kind == "llama-server" and data is not None:
                    entry.n_ctx = await self._read_n_ctx(http, p.base_url.removesuffix("/v1"))
                if entry.n_ctx and self.providers is not None:
                    self.providers.window_hints[(p.name, "*")] = entry.n_ctx
        except (httpx2.HTTPError, ValueError, AttributeError):
            entry.error = not_running(p.kind, p.base_url)
            return entry
        if data is None:
            entry.state, entry.error = "failed", f"GET /models answered {r.status_code}"
            return entry
        entry.state = "ready"
        entry.model = next((m.get("id") for m in data if isinstance(m, dict)), None)
        return entry

    def _unmanaged(self) -> list[Provider]:
        if self.providers is None:
            return []
        return [p for p in self.providers.by_name.values() if p.local and not p.managed]

    async def list(self, p: Params, ctx: RequestContext) -> ServerList:
        """Local model servers: the managed ones with their state, the others probed."""
        managed = [self._entry(s) for s in self.servers.values()]
        others = self._unmanaged()
        async with asyncio.TaskGroup() as tg:
            probes = [tg.create_task(self.probe(u)) for u in others]
        return ServerList(servers=managed + [t.result() for t in probes])

    async def start_method(self, p: NameParams, ctx: RequestContext) -> ServerEntry:
        """Start a managed local server now (or probe an unmanaged one); its entry."""
        if p.name not in self.servers:
            prov = next((u for u in self._unmanaged() if u.name == p.name), None)
            if prov is None:
                raise _not_found(p.name)
            entry = await self.probe(prov)
            if entry.state != "ready":
                message = entry.error or not_running(prov.kind, prov.base_url)
                raise errors.UpstreamUnreachable(
                    message, provider=prov.name, base_url=prov.base_url
                )
            return entry
        s = self.servers[p.name]
        s.last_used = time.monotonic()
        await self.start(s)
        return self._entry(s)

    async def stop_method(self, p: NameParams, ctx: RequestContext) -> ServerEntry:
        """Stop a managed local server; its entry."""
        if p.name not in self.servers and any(u.name == p.name for u in self._unmanaged()):
            raise errors.InvalidParams(
                f"{p.name} is not managed by assistantd: stop it yourself", reason="unmanaged"
            )
        s = self._managed(p.name)
        await self._stop(s, "asked to (local/stop)")
        return self._entry(s)

    async def logs(self, p: LogsParams, ctx: RequestContext) -> LogsResult:
        """The last lines of a managed local server's log file."""
        s = self._managed(p.name)
        text = await asyncio.to_thread(llama.tail, s.log_path, p.lines)
        return LogsResult(name=s.name, path=str(s.log_path), lines=text.splitlines())
