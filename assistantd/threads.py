"""Blocking calls off the event loop, on daemon threads of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def off_loop(
    call: Callable[[], T], name: str, lock: threading.Lock | None = None
) -> asyncio.Future[T]:
    """Run ``call`` on a daemon thread of its own (holding ``lock`` if given) and settle a
    future on the loop. Unlike the loop's executor, a thread still busy at shutdown (an
    import, a D-Bus call that hangs for ever) is abandoned, not joined, and uses up no
    shared pool."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if fut.done():
            return
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)

    def run() -> None:
        try:
            with lock or contextlib.nullcontext():
                value, error = call(), None
        except BaseException as e:
            value, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut
