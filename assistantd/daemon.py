"""The daemon process: wires config, keys, store, providers and methods to the socket,
and owns the lifecycle (ready, reload, shutdown, signals)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

from assistantd import (
    PROTOCOL_VERSION,
    __version__,
    config,
    errors,
    framing,
    logs,
    network,
    paths,
    settings,
)
from assistantd.catalog import Catalog, ModelsParams, ModelsResult, ProvidersResult
from assistantd.chat import Chat, ChatParams, ChatResult
from assistantd.conversations import (
    Conversation,
    ConversationList,
    Conversations,
    DeleteResult,
    ExportParams,
    ExportResult,
    ForkParams,
    ForkResult,
    IdParams,
    ListParams,
    RenameParams,
    RenameResult,
)
from assistantd.events import Bus, SubscribeParams, SubscribeResult
from assistantd.keys import (
    KeyDeleteResult,
    KeyListResult,
    Keys,
    KeySetParams,
    KeySetResult,
    ProviderParam,
)
from assistantd.local import (
    LocalServers,
    LogsParams,
    LogsResult,
    NameParams,
    ServerEntry,
    ServerList,
)
from assistantd.providers import Providers
from assistantd.roles import Roles, RolesResult
from assistantd.rpc import EmptyResult, NoParams, Registry, RequestContext, Result
from assistantd.server import AlreadyRunning, Listener, Server, notify_systemd
from assistantd.store import Store, StoreError
from assistantd.summarize import Summarizer, SummarizeResult, TextParams, UrlParams
from assistantd.threads import off_loop
from assistantd.usage import Ledger, ReportParams, ReportResult, Reports

log = logging.getLogger("assistantd")

FALLBACK_MODEL = "gpt-4.1"
# The SDK's background import waits for a quiet moment, or this long at most.
SDK_IDLE_S = 0.25
SDK_LATEST_S = 5.0


class Status(Result):
    version: str
    protocol: int
    pid: int
    uptime_s: float
    socket: str
    data_dir: str
    config_path: str
    config_ok: bool
    config_error: str | None
    active_requests: int
    providers: list[str]
    default_model: str
    # why that model: the config's default_model, the bundled local model (no remote
    # provider has a key), or the built-in fallback
    default_model_source: Literal["config", "local", "fallback"]
    keyring_error: str | None = None
    # The proxy provider requests go through (user and password shown as ***), and where
    # it is set: the config's [network] (page fetches use it too) or the daemon's
    # environment (HTTPS_PROXY...: provider requests only); null: direct.
    proxy: str | None = None
    proxy_source: Literal["config", "environment"] | None = None
    no_proxy: list[str] = []
    ca_bundle: str | None = None
    # The openai SDK: not imported yet, importing (on a thread of its own), ready, or failed
    # to import; and how streamed answers go now (the config's ``streaming``): through it,
    # or in plain HTTP on the same client.
    sdk: Literal["not_loaded", "importing", "ready", "failed"] = "not_loaded"
    streaming_via: Literal["sdk", "http"] = "http"


class Daemon:
    def __init__(self, socket_path: Path, config_path: Path, data_dir: Path) -> None:
        self.started = time.monotonic()
        self.socket_path = socket_path
        self.config_path = config_path
        self.data_dir = data_dir
        self.config_error: str | None = None
        self.failure: StoreError | None = None  # why the daemon stopped on its own, if it did
        self._config_stamp: tuple[int, int, int] | None = None  # the file last read
        self._hup = asyncio.Event()  # SIGHUP: reload
        # Set once the default provider's connection is made (or could not be): the
        # start-up's other imports wait for it, so as not to slow the first answer.
        self.prepared = asyncio.Event()
        self.config = self._read_config() or config.Config()
        self.registry = Registry()
        self.store = Store(data_dir / "conversations.sqlite3")
        self.local = LocalServers(self.config)
        self.providers = Providers(self.local.effective(self.config), self.local.base_url)
        self.local.bind(self.providers)
        self.bus = Bus()
        self.local.on_state = lambda name, state: self.bus.publish(
            "local/state", {"name": name, "state": state}
        )
        self.ledger = Ledger(self.store, self.config)
        self.providers.on_usage = self.ledger.record
        self.usage = Reports(self.store)
        self.roles = Roles(lambda: self.config)
        self.chat = Chat(
            self.store, self.providers, self.ledger, self.request_default_model, self.roles
        )
        self.summarizer = Summarizer(
            self.store, self.providers, self.chat, lambda: self.config.summarize
        )
        self.conversations = Conversations(self.store)
        self.keys = Keys(self.providers, self.local)
        self.catalog = Catalog(self.providers, self.local)
        self.server = Server(self.registry)
        self.stopping = asyncio.Event()
        self._register()

    # -- config --------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.config_path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read_config(self) -> config.Config | None:
        self._config_stamp = self._stamp()
        try:
            cfg = settings.load(self.config_path)
        except config.ConfigError as e:
            self.config_error = str(e)
            log.error("config not applied: %s", e)
            return None
        self.config_error = None
        return cfg

    async def reload(self) -> None:
        """Re-read the config (off the event loop); a bad one keeps the last good one and
        is reported."""
        cfg = await off_loop(self._read_config, "config")
        self.bus.publish(
            "config/changed", {"config_ok": cfg is not None, "config_error": self.config_error}
        )
        if cfg is not None:
            self.config = cfg
            self.ledger.config = cfg
            self.local.reconfigure(cfg)
            self.providers.reconfigure(self.local.effective(cfg))
            self.catalog.forget()
            log.info("config reloaded from %s", self.config_path)

    async def watch_config(self) -> None:
        def load() -> Any:  # awatch would import anyio's asyncio backend on the loop (40 ms)
            importlib.import_module("anyio._backends._asyncio")
            return importlib.import_module("watchfiles")

        # Imports on two threads at once hold each other up (the GIL): this one waits
        # until the default provider's connection is made and no request is in flight,
        # so that a cold daemon's first answer is not slowed by it.
        await self.prepared.wait()
        await self._idle(SDK_IDLE_S)
        watchfiles = await off_loop(load, "import")
        keep_forever("the config watcher's imports")

        folder = self.config_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        target = str(self.config_path.resolve())

        def only_config(change: Any, path: str) -> bool:
            return str(Path(path).resolve()) == target

        # The watch starts a while after the first read (the import above): a change made
        # meanwhile has no event, so the file's stamp is also checked at each quiet timeout.
        async for changes in watchfiles.awatch(
            folder,
            watch_filter=only_config,
            debounce=200,
            step=50,
            stop_event=self.stopping,
            recursive=False,
            yield_on_timeout=True,
        ):
            if changes or self._stamp() != self._config_stamp:
                await self.reload()

    def default_model(self) -> str:
        return self.default_model_and_source()[0]

    async def request_default_model(self) -> str:
        """The default model for a request: once the keyring has said which providers
        have keys, where that decides it."""
        await self.local.keys_known()
        return self.default_model()

    def default_model_and_source(self) -> tuple[str, Literal["config", "local", "fallback"]]:
        """The model a request that names none gets, and where that choice comes from."""
        if self.config.default_model:
            return self.config.default_model, "config"
        if local := self.local.no_key_default():
            return local, "local"
        return FALLBACK_MODEL, "fallback"

    # -- methods -------------------------------------------------------------------

    def _register(self) -> None:
        r = self.registry.add
        r("daemon/status", NoParams, Status, self.status)
        r("daemon/reload", NoParams, Status, self.do_reload)
        r("daemon/shutdown", NoParams, EmptyResult, self.shutdown)
        r("keys/set", KeySetParams, KeySetResult, self.keys.set)
        r("keys/delete", ProviderParam, KeyDeleteResult, self.keys.delete)
        r("keys/list", NoParams, KeyListResult, self.keys.list)
        r("providers/list", NoParams, ProvidersResult, self.catalog.providers_list)
        r("models/list", ModelsParams, ModelsResult, self.catalog.models_list)
        r("chat/send", ChatParams, ChatResult, self.chat.send)
        c = self.conversations
        r("conversations/list", ListParams, ConversationList, c.list)
        r("conversations/get", IdParams, Conversation, c.get)
        r("conversations/rename", RenameParams, RenameResult, c.rename)
        r("conversations/delete", IdParams, DeleteResult, c.delete)
        r("conversations/fork", ForkParams, ForkResult, c.fork)
        r("conversations/export", ExportParams, ExportResult, c.export)
        r("usage/report", ReportParams, ReportResult, self.usage.report)
        r("daemon/subscribe", SubscribeParams, SubscribeResult, self.bus.subscribe)
        r("local/list", NoParams, ServerList, self.local.list)
        r("local/start", NameParams, ServerEntry, self.local.start_method)
        r("local/stop", NameParams, ServerEntry, self.local.stop_method)
        r("local/logs", LogsParams, LogsResult, self.local.logs)
        r("summarize/url", UrlParams, SummarizeResult, self.summarizer.url)
        r("summarize/text", TextParams, SummarizeResult, self.summarizer.text)
        r("roles/list", NoParams, RolesResult, self.roles.list)

    async def status(self, p: NoParams, ctx: RequestContext) -> Status:
        """The daemon's version, paths, config state, load and providers."""
        model, source = self.default_model_and_source()
        net = self.providers.network
        proxy, proxy_source = network.in_use(net)
        return Status(
            version=__version__,
            protocol=PROTOCOL_VERSION,
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started, 3),
            socket=str(self.socket_path),
            data_dir=str(self.data_dir),
            config_path=str(self.config_path),
            config_ok=self.config_error is None,
            config_error=self.config_error,
            active_requests=max(0, len(self.registry.active) - 1),  # not counting this one
            providers=list(self.providers.by_name),
            default_model=model,
            default_model_source=source,
            keyring_error=self.providers.keyring_error,
            proxy=proxy,
            proxy_source=proxy_source,
            no_proxy=list(net.no_proxy),
            ca_bundle=net.ca_bundle,
            sdk=self.providers.sdk_state,
            streaming_via="sdk" if self.providers.stream_via_sdk() else "http",
        )

    async def do_reload(self, p: NoParams, ctx: RequestContext) -> Status:
        """Re-read the config file now; the result is the status after it."""
        await self.reload()
        return await self.status(p, ctx)

    async def shutdown(self, p: NoParams, ctx: RequestContext) -> EmptyResult:
        """Stop: cancel requests in flight (partial answers are saved), remove the socket."""
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return EmptyResult()

    # -- lifecycle -----------------------------------------------------------------

    async def run(self, listener: Listener) -> None:
        # Each part registers its cleanup as it starts; they run in reverse order (the
        # socket first, the store last), and every one runs even if an earlier one raises.
        async with contextlib.AsyncExitStack() as cleanup:
            cleanup.callback(log.info, "assistantd stopped")
            if self.config.streaming == "sdk":  # every answer waits for it: start at once
                self.providers.warm()
            migrated = await self.store.aopen()
            cleanup.push_async_callback(self.store.aclose)  # queued writes (the ledger) run
            cleanup.push_async_callback(self.providers.close)
            cleanup.push_async_callback(self.local.stop_all)
            cleanup.push_async_callback(self.summarizer.extractor.aclose)
            loop = asyncio.get_running_loop()

            def changed(cid: str, change: str) -> None:  # on the store's thread
                loop.call_soon_threadsafe(
                    self.bus.publish, "conversations/changed", {"id": cid, "change": change}
                )

            self.store.on_change = changed
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._hup.set)
            server = await asyncio.start_unix_server(
                self.server.handle, sock=listener.sock, limit=framing.STREAM_LIMIT
            )
            cleanup.push_async_callback(self._drain)
            cleanup.callback(server.close)
            cleanup.callback(notify_systemd, "STOPPING=1")
            log.info(
                "assistantd %s serving %s (pid %d)", __version__, self.socket_path, os.getpid()
            )
            notify_systemd("READY=1")
            async with asyncio.TaskGroup() as tg:
                watcher = tg.create_task(self.watch_config())
                reaper = tg.create_task(self.local.run())
                warmer = tg.create_task(self.warm())
                hup = tg.create_task(self._reload_on_hup())
                store = tg.create_task(self._store_upgraded(migrated))
                await self.stopping.wait()
                store.cancel()
                watcher.cancel()
                reaper.cancel()
                hup.cancel()
                warmer.cancel()  # a thread still importing is abandoned, not waited for

    async def _store_upgraded(self, migrated: asyncio.Future[None]) -> None:
        """Wait for the store's migrations; one that fails stops the daemon (exit 1): the
        file stays at the version before it, untouched by the failed step."""
        try:
            await migrated
        except Exception as e:
            self.failure = StoreError(f"cannot upgrade {self.store.path}: {e}")
            log.error("%s", self.failure)
            self.stopping.set()

    async def _reload_on_hup(self) -> None:
        """SIGHUP reloads the config: the signal handler only sets an event (it cannot
        await), and this task, owned by the daemon's TaskGroup, does the reading."""
        while True:
            await self._hup.wait()
            self._hup.clear()
            await self.reload()

    async def warm(self) -> None:
        """Have the default provider's connection made, then the SDK imported and its
        client built, before requests ask for them; nothing waits for this but requests
        that need the SDK (answers not streamed, model lists, or all with ``streaming =
        "sdk"``, which starts the import at once). The import (0.3-1.4 s of the GIL)
        starts once no request has been in flight for ``SDK_IDLE_S``, so a cold daemon's
        first answer, in plain HTTP, is not slowed by it."""
        try:
            try:
                default = self.providers.route(await self.request_default_model())
                await self.providers.prepare(default)
            finally:
                self.prepared.set()
            await self._idle(SDK_IDLE_S)
            await self.providers.sdk()
            await self.providers.prepare(default)
        except errors.RpcError as e:  # e.g. the default names no provider: its request says so
            log.info("nothing prepared ahead: %s", e.message)
        except ImportError as e:
            log.error("the openai SDK cannot be imported: %s", e)
        finally:
            keep_forever("the SDK's import")

    async def _idle(self, quiet_s: float, latest_s: float = SDK_LATEST_S) -> None:
        """Return once no request has been in flight for ``quiet_s``, or after ``latest_s``
        at most (a daemon that is never idle gets its SDK all the same)."""
        start = quiet_since = time.monotonic()
        while (now := time.monotonic()) - start < latest_s:
            if self.registry.active:
                quiet_since = now
            elif now - quiet_since >= quiet_s:
                return
            await asyncio.sleep(0.05)

    async def _drain(self) -> None:
        """Cancel requests in flight, give them a moment to answer, then drop connections."""
        tasks = {ctx.task for ctx in self.registry.active if ctx.task is not None}
        self.registry.cancel_all()
        if tasks:  # each stores its partial answer and sends its cancelled result
            await asyncio.wait(tasks, timeout=5)
        for task in list(self.server.connections):
            task.cancel()
        if self.server.connections:
            await asyncio.wait(list(self.server.connections), timeout=2)


SWITCH_INTERVAL_S = 0.0005


def no_core_dumps() -> None:
    """Keep keys out of core files and away from other processes: no core dump at all
    (RLIMIT_CORE 0), and on Linux the process is not dumpable (PR_SET_DUMPABLE 0), so
    its memory and /proc files are closed even to the user's other processes."""
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE = 4
            log.warning("prctl(PR_SET_DUMPABLE, 0) failed: %s", os.strerror(ctypes.get_errno()))


def keep_forever(after: str) -> None:
    """Take every object alive now out of the cyclic GC's scans (``gc.freeze``): after the
    background imports, nearly all are modules, classes and the SDK's models, which live
    as long as the daemon. A full collection walked them all, 76-85 ms holding the GIL,
    and it fell in the middle of bursts of requests (100 streams at once). Objects made
    later are still collected; a frozen one that later becomes cyclic garbage is not (a
    collection right after the imports finds none of 85,000 objects unreachable)."""
    gc.freeze()
    log.info("%d objects kept out of the GC's scans after %s", gc.get_freeze_count(), after)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="assistantd", description="The assistantd daemon.")
    parser.add_argument(
        "--socket", help="socket path (default: $ASSISTANTD_SOCKET, config, runtime dir)"
    )
    parser.add_argument(
        "--config", help="config file (default: $ASSISTANTD_CONFIG or the config dir)"
    )
    parser.add_argument("--quiet", action="store_true", help="log to the file only, not stderr")
    parser.add_argument(
        "--log-max-bytes",
        type=int,
        default=logs.MAX_BYTES,
        metavar="N",
        help=f"start a new log file past N bytes, keeping 3 (default: {logs.MAX_BYTES:,})",
    )
    parser.add_argument("--version", action="version", version=f"assistantd {__version__}")
    args = parser.parse_args(argv)
    no_core_dumps()
    # While the loop is busy relaying, a helper thread (the store's, the keyring's, the
    # SDK's import) waits for the GIL up to the switch interval at every acquisition; at
    # the default 5 ms, the store's writes for 100 new streams took most of a second.
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    config_path = paths.config_path(args.config)
    dirs = paths.dirs()
    logs.setup(dirs.log, "INFO", foreground=not args.quiet, max_bytes=args.log_max_bytes)
    socket_cfg = None
    try:
        cfg = settings.load(config_path)
        socket_cfg = cfg.socket
        logging.getLogger("assistantd").setLevel(cfg.log_level)
    except config.ConfigError:
        pass
    socket_path = paths.socket_path(args.socket, socket_cfg)
    listener = Listener(socket_path)
    try:
        listener.acquire()
    except AlreadyRunning as e:
        print(f"assistantd: {e}", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"assistantd: cannot listen on {socket_path}: {e}", file=sys.stderr)
        sys.exit(1)
    code = 0
    try:
        daemon = Daemon(socket_path, config_path, dirs.data)
        daemon.store.lock()  # one daemon per database, whatever its socket
        asyncio.run(daemon.run(listener))
        if daemon.failure is not None:
            raise daemon.failure
    except StoreError as e:  # the data folder is taken, or its schema is too new
        print(f"assistantd: {e}", file=sys.stderr)
        code = 1
    finally:
        listener.release()
    leave(code)


def leave(code: int) -> None:
    """Exit with ``code`` once everything is closed. A helper thread still busy (an
    import, a D-Bus call: ``off_loop`` abandons them) would be stopped wherever it is by
    the interpreter's finalization, and one stopped inside native code aborted the
    process ("FATAL: exception not rethrown", SIGABRT: 1 in 15-30 shutdowns right after
    a start). With one alive, the process ends without finalization, logs and stdio
    flushed; there is nothing else left to finalize (the store, the socket and the
    servers are closed by now)."""
    if any(t.daemon and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)
