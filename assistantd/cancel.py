"""What a request does when it is cancelled: store what it has, then answer or go on.

The contract (PROTOCOL.md): a request the client (or shutdown) cancels answers with a
cancelled result when it has one (``chat/send``, ``summarize/*``: the partial answer is
stored first), and -32800 otherwise; a request whose connection is lost just ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class _Connection(Protocol):
    @property
    def lost(self) -> bool: ...


class _Request(Protocol):  # an rpc.RequestContext (rpc imports this module)
    @property
    def cancel_requested(self) -> bool: ...
    @property
    def session(self) -> _Connection: ...


async def to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` (a store write) to its end even if this task is cancelled meanwhile.

    The write runs as a task this call awaits until it is done, so no task is left
    without an owner (as ``asyncio.shield`` leaves one); a cancel that arrives meanwhile
    is raised here as ``CancelledError`` once the write has finished."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # asyncio.wait leaves the awaited task running
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


def answer_cancelled(ctx: _Request) -> bool:
    """After a ``CancelledError`` in a request: True when it answers with a cancelled
    result (the client or shutdown asked, and the connection is there to read it); the
    task's cancel is then taken back. False: the ``CancelledError`` goes on."""
    if not ctx.cancel_requested or ctx.session.lost:
        return False
    if (task := asyncio.current_task()) is not None:
        task.uncancel()
    return True
