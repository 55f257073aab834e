"""Several connection pools behind one HTTP transport, each request sent through the
least busy one.

Each time a request starts or ends, httpcore looks at every idle connection of its pool
and polls its socket (has the server closed it?). With 100 streams at once that is
thousands of polls per burst, growing with the square of the streams (10,100 for 100
streams; about a third of the event loop's time with short answers). Split in ``POOLS``
pools, a burst spreads evenly, and each pass polls only its own pool's idle connections
(2,600 polls; with one-word answers the first-token p50 was 0.78x of one pool's). A
lone request always takes the first pool, so the next message of a chat finds the
connection the last one left open.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx2

POOLS = 4


class Pools(httpx2.AsyncBaseTransport):
    """``n`` transports made by ``make``; a request goes to the one with the fewest
    responses still open (ties: the first)."""

    def __init__(self, make: Callable[[], httpx2.AsyncBaseTransport], n: int = POOLS) -> None:
        self._pools = [make() for _ in range(n)]
        self._busy = [0] * n

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        i = self._busy.index(min(self._busy))
        self._busy[i] += 1
        try:
            response = await self._pools[i].handle_async_request(request)
        except BaseException:
            self._busy[i] -= 1
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # an async transport's
        response.stream = _Counted(response.stream, lambda: self._release(i))
        return response

    @property
    def busy(self) -> list[int]:
        """How many responses each pool has open."""
        return list(self._busy)

    def _release(self, i: int) -> None:
        self._busy[i] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


class _Counted(httpx2.AsyncByteStream):
    """A response's body that tells its pool once, when it is closed, that it is done."""

    def __init__(self, stream: httpx2.AsyncByteStream, done: Callable[[], None]) -> None:
        self._stream = stream
        self._done: Callable[[], None] | None = done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()  # the body itself: no extra step per chunk

    async def aclose(self) -> None:
        done, self._done = self._done, None
        try:
            await self._stream.aclose()
        finally:
            if done is not None:
                done()
