"""cancel: a cancelled request's store write runs to its end, and who gets a result (in-process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from assistantd.cancel import answer_cancelled, to_the_end
from assistantd.rpc import Registry, RequestContext, Session


def test_a_second_cancel_waits_for_the_write_and_leaves_no_task() -> None:
    """A cancel during ``to_the_end`` is raised only after the write finished, with no task left."""

    async def go() -> list[str]:
        log: list[str] = []
        started = asyncio.Event()

        async def write() -> str:
            started.set()
            await asyncio.sleep(0.05)  # a write that takes a moment (a thread's sqlite)
            log.append("written")
            return "mid"

        async def request() -> None:
            try:
                await to_the_end(write())
            except asyncio.CancelledError:
                log.append("cancelled")
                raise

        task = asyncio.create_task(request())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        others = asyncio.all_tasks() - {asyncio.current_task()}
        log.append(f"{len(others)} tasks left")
        return log

    assert asyncio.run(go()) == ["written", "cancelled", "0 tasks left"]


def test_to_the_end_returns_the_result_and_raises_the_writes_error() -> None:
    """Uncancelled, ``to_the_end`` gives the write's result, or raises its error."""

    async def ok() -> int:
        return 7

    async def bad() -> int:
        raise OSError("disk full")

    assert asyncio.run(to_the_end(ok())) == 7
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(to_the_end(bad()))


def _ctx() -> RequestContext:
    async def send(message: Any) -> None:
        pass

    return RequestContext(Session(Registry(), send, lambda coro: None), 1, None)


def test_only_a_requested_cancel_on_a_live_connection_is_answered() -> None:
    """A cancel the client asked for is answered (and taken back); a lost connection's is not."""

    async def go(requested: bool, lost: bool) -> tuple[bool, int]:
        ctx = _ctx()
        ctx.cancel_requested, ctx.session.lost = requested, lost
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return answer_cancelled(ctx), task.cancelling()
        return False, -1

    assert asyncio.run(go(requested=True, lost=False)) == (True, 0)
    assert asyncio.run(go(requested=True, lost=True)) == (False, 1)
    assert asyncio.run(go(requested=False, lost=False)) == (False, 1)
