"""Pushed changes: a client subscribes (``daemon/subscribe``) to events and gets them as
notifications without a ``request_id``: ``config/changed``, ``conversations/changed``,
``local/state``. Each subscribed connection has a bounded queue drained by a task its
connection owns, so a slow reader never holds up the daemon or grows memory without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

from assistantd.rpc import Params, RequestContext, Result, Session

log = logging.getLogger("assistantd.events")

Event = Literal["config/changed", "conversations/changed", "local/state"]
EVENTS: tuple[str, ...] = ("config/changed", "conversations/changed", "local/state")
QUEUE_SIZE = 1000


class SubscribeParams(Params):
    events: list[Event]


class SubscribeResult(Result):
    events: list[str]


class Subscription:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.events: set[str] = set()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)

    async def pump(self) -> None:
        with contextlib.suppress(ConnectionResetError):
            while not self.session.lost:
                await self.session.send(await self.queue.get())


class Bus:
    def __init__(self) -> None:
        self.subs: dict[Session, Subscription] = {}

    def publish(self, event: str, params: dict[str, Any]) -> None:
        """Queue ``event`` for every connection subscribed to it (never blocks)."""
        message = {"jsonrpc": "2.0", "method": event, "params": params}
        for session, sub in list(self.subs.items()):
            if session.lost:
                del self.subs[session]
            elif event in sub.events:
                try:
                    sub.queue.put_nowait(message)
                except asyncio.QueueFull:
                    log.warning("a subscriber is not reading; dropped %s", event)

    async def subscribe(self, p: SubscribeParams, ctx: RequestContext) -> SubscribeResult:
        """Receive the named events on this connection as notifications (replaces the set)."""
        session = ctx.session
        sub = self.subs.get(session)
        if sub is None:
            sub = self.subs[session] = Subscription(session)
            session.background.add(session.spawn(sub.pump()))
        sub.events = set(p.events)
        return SubscribeResult(events=sorted(sub.events))
