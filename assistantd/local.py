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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from assistantd import errors, llama, paths, secrets
from assistantd.config import Config, LocalConfig
from assistantd.rpc import Params, RequestContext, Result

if TYPE_CHECKING:
    from assistantd.providers import Provider, Providers

log = logging.getLogger("assistantd.local")

TICK_S = 0.5  # how often the reaper looks at the servers
AUTO_RESTART_GAP_S = 60.0  # a server that keeps dying is restarted by requests only
KEYS_EVERY_S = 15.0  # how often the no-key default re-reads the keyring
STOP_GRACE_S = 5.0
LOG_MAX_BYTES = 5_000_000
KIND_NAMES = {"lmstudio": "LM Studio", "ollama": "Ollama", "llama-server": "llama-server"}

# Run as ``python -I -S -c WRAPPER PARENT_PID COMMAND...``: asks the kernel to send
# SIGTERM when the daemon dies, then becomes the server (exec keeps the pid and the
# setting). A wrapper, not preexec_fn: preexec_fn is unsafe in a threaded process.
WRAPPER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass  # not Linux: shutdown and the idle timeout still stop it
if os.getppid() != int(sys.argv[1]):
    sys.exit(70)  # the daemon died before the line above took effect
os.execvp(sys.argv[2], sys.argv[2:])
"""


class ServerEntry(BaseModel):
    name: str
    kind: str
    base_url: str
    managed: bool
    state: str  # stopped | starting | ready | failed
    model: str | None
    n_ctx: int | None = None  # the context size the server reports (/props)
    pid: int | None = None  # of a managed server's process
    error: str | None = None


class ListResult(Result):
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
    state: str = "stopped"
    proc: asyncio.subprocess.Process | None = None
    port: int | None = None
    last_used: float = field(default_factory=time.monotonic)
    error: str | None = None
    starting: asyncio.Task[None] | None = None
    restarted_at: float = float("-inf")
    n_ctx: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1" if self.port else ""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def model(self) -> str:
        return self.cfg.alias or self.name


def not_running(kind: str, base_url: str) -> str:
    """'LM Studio is not running on localhost:1234'."""
    where = urlsplit(base_url).netloc or base_url
    return f"{KIND_NAMES.get(kind, kind)} is not running on {where}"


def _not_found(name: str) -> errors.NotFound:
    return errors.NotFound(f"no local server named {name!r}", kind="local_server", id=name)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200 * lines - 4096))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class LocalServers:
    def __init__(self, config: Config) -> None:
        self.builtin = llama.builtin_config()  # None without the ``local`` extra
        self.config = config
        self.servers: dict[str, Managed] = {}
        self.providers: Providers | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._keyring_keys: set[str] = set()
        self._keys_read_at = float("-inf")
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
                self.servers[name] = Managed(name, cfg, log_dir / f"local-{name}.log")
            n_ctx = llama.window_from_args(cfg.args)
            if self.providers is not None and n_ctx and self.servers[name].state != "ready":
                self.providers.window_hints[(name, "*")] = n_ctx

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
            if remote and (p.name in self._keyring_keys or secrets.env_key(p.key_env)):
                return None
        return llama.BUILTIN_ALIAS

    async def refresh_keys(self) -> None:
        """Which remote providers have a key in the OS keyring (for ``no_key_default``)."""
        self._keys_read_at = time.monotonic()
        if self.providers is None:
            return
        found: set[str] = set()

        async def one(name: str) -> None:
            with contextlib.suppress(secrets.KeyringUnavailable):
                if await secrets.get_key(name):
                    found.add(name)

        async with asyncio.TaskGroup() as tg:
            for p in self.providers.by_name.values():
                if p.needs_key and not p.local:
                    tg.create_task(one(p.name))
        self._keyring_keys = found

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """The reaper: idle stops, crash restarts, key refreshes. Owns the start tasks."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                while True:
                    await self._tick()
                    await asyncio.sleep(TICK_S)
            finally:
                self._tg = None

    async def _tick(self) -> None:
        now = time.monotonic()
        if self.builtin_active() and now - self._keys_read_at > KEYS_EVERY_S:
            await self.refresh_keys()
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
            raise errors.LocalServerFailed(
                f"local server {s.name} did not start: {s.error}", name=s.name,
                log_tail=tail(s.log_path),
            )  # fmt: skip

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
            await self._kill(s.proc)
        s.port = s.port or free_port()  # a restart keeps the port: warm clients keep working
        argv, env, fd, missing = await asyncio.to_thread(self._prepare, s, s.port)
        try:
            s.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", WRAPPER, str(os.getpid()), *argv,
                stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C in the daemon's terminal does not reach it
            )  # fmt: skip
        except OSError as e:
            raise errors.LocalServerFailed(f"cannot run {argv[0]}: {e}") from None
        finally:
            os.close(fd)
        log.info("local server %s starting (pid %d, port %d)", s.name, s.proc.pid, s.port)
        try:
            await self._wait_healthy(s, s.proc, missing)
        except BaseException:
            await asyncio.shield(self._kill(s.proc))
            s.proc = None
            raise
        s.state, s.last_used = "ready", time.monotonic()
        log.info("local server %s ready at %s", s.name, s.base_url)

    @staticmethod
    def _prepare(s: Managed, port: int) -> tuple[list[str], dict[str, str], int, str | None]:
        """The blocking part of a start, run in a thread: the command line, the model
        (the bundled one assembled on first use), the environment, the log file open
        for appending; and the model path when that file is missing."""
        cfg = s.cfg
        binary = llama.resolve_command(cfg.command)
        if binary is None:
            raise errors.LocalServerFailed(f"command not found: {cfg.command}")
        cache = paths.dirs().cache
        if cfg.model == llama.BUNDLED_MODEL:
            try:
                model = llama.bundled_model(cache)
            except Exception as e:  # missing chunks, a bad checksum, a full disk
                raise errors.LocalServerFailed(f"cannot assemble the bundled model: {e}") from None
        else:
            model = Path(cfg.model).expanduser()
        argv = [str(binary), "--host", "127.0.0.1", "--port", str(port), "-m", str(model),
                "--alias", s.model, "--jinja", *cfg.args,
                *llama.workaround_args(binary, cfg.args)]  # fmt: skip
        try:
            env = llama.server_env(binary, cache)
            s.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with contextlib.suppress(OSError):
                if s.log_path.stat().st_size > LOG_MAX_BYTES:
                    s.log_path.replace(s.log_path.with_suffix(".log.1"))
            fd = os.open(s.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise errors.LocalServerFailed(f"cannot prepare {binary}: {e}") from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.write(fd, f"--- {stamp} assistantd starts: {shlex.join(argv)}\n".encode())
        return argv, env, fd, None if model.is_file() else str(model)

    async def _wait_healthy(self, s: Managed, proc: asyncio.subprocess.Process,
                            missing: str | None) -> None:  # fmt: skip
        import httpx2

        root = s.base_url.removesuffix("/v1")
        async with httpx2.AsyncClient(timeout=2.0) as http:
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
            except TimeoutError:
                raise errors.LocalServerFailed(
                    f"llama-server was not healthy within {s.cfg.startup_timeout_s:g} s"
                ) from None
            s.n_ctx = await self._read_n_ctx(http, root)
        if s.n_ctx and self.providers is not None:
            self.providers.window_hints[(s.name, "*")] = s.n_ctx

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
            async with httpx2.AsyncClient(timeout=2.0) as http:
                slots = (await http.get(f"{s.base_url.removesuffix('/v1')}/slots")).json()
            return any(isinstance(x, dict) and x.get("is_processing") for x in slots)
        except Exception:  # /slots turned off (--no-slots): idle is idle
            return False

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _stop(self, s: Managed, why: str) -> None:
        if s.starting is not None and not s.starting.done():
            s.starting.cancel()
            await asyncio.wait([s.starting])
        if s.proc is not None:
            log.info("stopping local server %s (pid %d): %s", s.name, s.proc.pid, why)
            await asyncio.shield(self._kill(s.proc))
        s.proc, s.state, s.port = None, "stopped", None

    # -- methods ---------------------------------------------------------------------

    def _entry(self, s: Managed) -> ServerEntry:
        pid = s.proc.pid if s.proc is not None and s.alive else None
        return ServerEntry(name=s.name, kind="llama-server", base_url=s.base_url, managed=True,
                           state=s.state, model=s.model, n_ctx=s.n_ctx if pid else None,
                           pid=pid, error=s.error)  # fmt: skip

    def state(self, name: str) -> str:
        s = self.servers.get(name)
        return s.state if s is not None else "stopped"

    async def probe(self, p: Provider) -> ServerEntry:
        """An unmanaged server: ready when its ``GET /v1/models`` answers, else stopped."""
        import httpx2

        entry = ServerEntry(name=p.name, kind=p.kind, base_url=p.base_url, managed=False,
                            state="stopped", model=None)  # fmt: skip
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

    async def list(self, p: Params, ctx: RequestContext) -> ListResult:
        """Local model servers: the managed ones with their state, the others probed."""
        managed = [self._entry(s) for s in self.servers.values()]
        others = self._unmanaged()
        probed = await asyncio.gather(*(self.probe(u) for u in others))
        return ListResult(servers=managed + list(probed))

    async def start_method(self, p: NameParams, ctx: RequestContext) -> ServerEntry:
        """Start a managed local server now (or probe an unmanaged one); its entry."""
        if p.name not in self.servers:
            prov = next((u for u in self._unmanaged() if u.name == p.name), None)
            if prov is None:
                raise _not_found(p.name)
            entry = await self.probe(prov)
            if entry.state != "ready":
                message = entry.error or not_running(prov.kind, prov.base_url)
                raise errors.UpstreamUnreachable(message, provider=prov.name,
                                                 base_url=prov.base_url)  # fmt: skip
            return entry
        s = self.servers[p.name]
        s.last_used = time.monotonic()
        await self.start(s)
        return self._entry(s)

    async def stop_method(self, p: NameParams, ctx: RequestContext) -> ServerEntry:
        """Stop a managed local server; its entry."""
        if p.name not in self.servers and any(u.name == p.name for u in self._unmanaged()):
            raise errors.InvalidParams(f"{p.name} is not managed by assistantd: stop it yourself",
                                       reason="unmanaged")  # fmt: skip
        s = self._managed(p.name)
        await self._stop(s, "asked to (local/stop)")
        return self._entry(s)

    async def logs(self, p: LogsParams, ctx: RequestContext) -> LogsResult:
        """The last lines of a managed local server's log file."""
        s = self._managed(p.name)
        text = await asyncio.to_thread(tail, s.log_path, p.lines)
        return LogsResult(name=s.name, path=str(s.log_path), lines=text.splitlines())
