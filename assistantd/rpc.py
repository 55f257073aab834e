"""JSON-RPC 2.0 dispatch: a registry of methods with pydantic params and results, and
one ``Session`` per connection that runs its requests concurrently, each as a task
owned by the connection, cancellable by ``$/cancelRequest``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from assistantd import errors
from assistantd.cancel import answer_cancelled
from assistantd.models import Model

log = logging.getLogger("assistantd.rpc")

MAX_INFLIGHT = 32  # requests of one connection that run at once; the rest wait their turn
MAX_QUEUED = 2 * MAX_INFLIGHT  # messages read and not yet answered before reading pauses

Send = Callable[[Any], Awaitable[None]]
P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


class Params(Model):
    """Base of every method's params: unknown names are errors, as in the config."""

    model_config = ConfigDict(extra="forbid")


class Result(Model):
    """Base of every method's result."""


class NoParams(Params):
    pass


class EmptyResult(Result):
    pass


class RequestContext:
    """What a handler knows of its request: its id, its token, and how to notify."""

    def __init__(self, session: Session, request_id: str | int | None, token: Any) -> None:
        self.session = session
        self.request_id = request_id
        self.token = token
        self.cancel_requested = False  # by the client or by shutdown, not by a lost connection
        self.task: asyncio.Task[Any] | None = None

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        head: dict[str, Any] = {"request_id": self.request_id}
        if self.token is not None:
            head["token"] = self.token
        await self.session.send({"jsonrpc": "2.0", "method": method, "params": head | params})

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.task is not None:
            self.task.cancel()


Handler = Callable[[Any, RequestContext], Awaitable[BaseModel]]


@dataclass
class Method:
    name: str
    params: type[BaseModel]
    result: type[BaseModel]
    func: Handler
    doc: str = ""


@dataclass
class Registry:
    """Every method the daemon serves; the protocol doc is generated from it."""

    methods: dict[str, Method] = field(default_factory=dict)
    active: set[RequestContext] = field(default_factory=set)

    def add(
        self,
        name: str,
        params: type[P],
        result: type[R],
        func: Callable[[P, RequestContext], Awaitable[R]],
    ) -> None:
        doc = (func.__doc__ or "").strip().split("\n\n")[0]
        self.methods[name] = Method(name, params, result, func, " ".join(doc.split()))

    def cancel_all(self) -> None:
        for ctx in list(self.active):
            ctx.cancel()


def _error(id_: Any, err: errors.RpcError) -> dict[str, Any]:
    from assistantd.keystore import scrub

    body = err.to_json()
    body["message"] = scrub(body["message"])
    if "data" in body:
        body["data"] = json.loads(scrub(json.dumps(body["data"], default=str)))
    return {"jsonrpc": "2.0", "id": id_, "error": body}


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


class Session:
    """One connection's requests. ``send`` writes one framed message to the client."""

    def __init__(self, registry: Registry, send: Send, spawn: Callable[[Any], Any]) -> None:
        self.registry = registry
        self._send = send
        # Starts a task owned by this connection (its TaskGroup), e.g. an event pump.
        self.spawn = spawn
        self.background: set[asyncio.Task[Any]] = set()  # ended at end of input or loss
        self.inflight: dict[str, RequestContext] = {}
        self.lost = False
        # Backpressure: a request runs while it holds a slot; the reader takes a place in
        # the queue before it reads a message, so past the bound it stops reading.
        self.slots = asyncio.Semaphore(MAX_INFLIGHT)
        self.queue = asyncio.Semaphore(MAX_QUEUED)

    async def send(self, message: Any) -> None:
        if self.lost:
            raise ConnectionResetError("connection lost")
        try:
            await self._send(message)
        except (OSError, RuntimeError, TimeoutError) as e:
            self.connection_lost()
            raise ConnectionResetError("connection lost") from e

    def connection_lost(self) -> None:
        """A reset or failed write: every request of this connection is cancelled."""
        if not self.lost:
            self.lost = True
            for ctx in list(self.inflight.values()):
                if ctx.task is not None:
                    ctx.task.cancel()
            self.end_background()

    def end_background(self) -> None:
        for task in self.background:
            task.cancel()

    async def handle(self, raw: bytes) -> None:
        """Handle one framed message (a request, a notification or a batch); gives back
        the place in the queue the reader took for it."""
        try:
            await self._handle(raw)
        except Exception:  # a bug outside any handler: answer it, keep the connection
            log.exception("bug while handling a message")
            await self._reply(_error(None, errors.InternalError("internal error; see the log")))
        finally:
            self.queue.release()

    async def _handle(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:  # too deep is unparseable too
            await self._reply(_error(None, errors.ParseError(f"parse error: {e}")))
            return
        if isinstance(msg, list):
            if not msg:
                await self._reply(_error(None, errors.InvalidRequest("empty batch")))
                return
            tasks = []
            started = asyncio.Semaphore(MAX_INFLIGHT)  # a huge batch is not all tasks at once

            async def item(one: Any) -> dict[str, Any] | None:
                try:
                    return await self._one(one)
                finally:
                    started.release()

            async with asyncio.TaskGroup() as tg:
                for one in msg:
                    await started.acquire()
                    tasks.append(tg.create_task(item(one)))
            replies = [r for t in tasks if (r := t.result()) is not None]
            if replies:
                await self._reply(replies)
            return
        reply = await self._one(msg)
        if reply is not None:
            await self._reply(reply)

    async def _reply(self, message: Any) -> None:
        try:
            await self.send(message)
        except ConnectionResetError:
            log.debug("client went away before its answer")

    async def _one(self, msg: Any) -> dict[str, Any] | None:
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return _error(None, errors.InvalidRequest("not a JSON-RPC 2.0 request"))
        is_notification = "id" not in msg
        id_ = msg.get("id")
        method = msg.get("method")
        if not is_notification and not _valid_id(id_):
            return _error(None, errors.InvalidRequest("id must be a string or an integer"))
        if not isinstance(method, str):
            return None if is_notification else _error(id_, errors.InvalidRequest("no method"))
        params = msg.get("params", {})
        if method == "$/cancelRequest":
            if isinstance(params, dict) and _valid_id(params.get("id")):
                target = self.inflight.get(json.dumps(params["id"]))
                if target is not None:
                    target.cancel()
            return None if is_notification else {"jsonrpc": "2.0", "id": id_, "result": {}}
        reply = await self._call(method, params, id_)
        return None if is_notification else reply

    async def _call(self, name: str, params: Any, id_: Any) -> dict[str, Any]:
        method = self.registry.methods.get(name)
        if method is None:
            return _error(id_, errors.MethodNotFound(f"method not found: {name}", method=name))
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return _error(id_, errors.InvalidParams("params must be an object (by name)"))
        params = dict(params)
        ctx = RequestContext(self, id_, params.pop("token", None))
        try:
            parsed = method.params.model_validate(params)
        except ValidationError as e:
            errs = e.errors(include_url=False, include_input=False, include_context=False)
            return _error(id_, errors.InvalidParams(f"invalid params for {name}", errors=errs))
        key = json.dumps(id_)
        ctx.task = asyncio.current_task()
        if id_ is not None:
            self.inflight[key] = ctx
        self.registry.active.add(ctx)
        try:
            async with self.slots:
                result = await method.func(parsed, ctx)
            return {"jsonrpc": "2.0", "id": id_, "result": result.model_dump(mode="json")}
        except errors.RpcError as e:
            return _error(id_, e)
        except asyncio.CancelledError:
            if not answer_cancelled(ctx):
                raise
            return _error(id_, errors.RequestCancelled(f"{name} was cancelled"))
        except Exception:
            log.exception("bug in %s", name)
            return _error(
                id_, errors.InternalError(f"internal error in {name}; see the daemon log")
            )
        finally:
            self.registry.active.discard(ctx)
            if self.inflight.get(key) is ctx:
                del self.inflight[key]
