"""The provider HTTP client's pools (assistantd/pools.py) with real httpx2 transports and
the real fake upstream on loopback: a burst spreads evenly, a lone request takes the
first pool and reuses a connection, and however a response ends its place is given back."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest

from assistantd.pools import POOLS, Pools
from tests.upstream import Upstream


def chat(text: str) -> dict[str, Any]:
    return {"model": "fake-echo", "stream": True, "messages": [{"role": "user", "content": text}]}


def client() -> tuple[httpx2.AsyncClient, Pools]:
    pools = Pools(httpx2.AsyncHTTPTransport)
    return httpx2.AsyncClient(transport=pools), pools


def test_a_burst_spreads_evenly_and_a_lone_request_reuses_a_connection(
    upstream: Upstream,
) -> None:
    async def main() -> None:
        http, pools = client()
        url = upstream.base_url + "/chat/completions"
        async with http:
            burst = [
                http.build_request("POST", url, json=chat("[[slow:0.05]] one two three"))
                for _ in range(2 * POOLS)
            ]
            responses = await asyncio.gather(*(http.send(r, stream=True) for r in burst))
            assert pools.busy == [2] * POOLS  # every answer still open
            texts = [b"".join([c async for c in r.aiter_bytes()]) for r in responses]
            for r in responses:
                await r.aclose()
            assert all(b"three" in t and b"[DONE]" in t for t in texts)
            assert pools.busy == [0] * POOLS
            burst_peers = {q["peer"] for q in upstream.requests}
            assert len(burst_peers) == 2 * POOLS

            async with http.stream("POST", url, json=chat("alone")) as r:
                assert pools.busy == [1] + [0] * (POOLS - 1)
                assert b"alone" in b"".join([c async for c in r.aiter_bytes()])
            assert upstream.requests[-1]["peer"] in burst_peers  # kept, and used again
            assert pools.busy == [0] * POOLS

    asyncio.run(main())


def test_a_failed_or_cancelled_request_gives_its_place_back(upstream: Upstream) -> None:
    async def main() -> None:
        http, pools = client()
        async with http:
            with pytest.raises(httpx2.ConnectError):  # nothing listens on port 9
                await http.post("http://127.0.0.1:9/v1/chat/completions", json=chat("x"))
            assert pools.busy == [0] * POOLS

            started = asyncio.Event()

            async def read_slowly() -> None:
                url = upstream.base_url + "/chat/completions"
                async with http.stream("POST", url, json=chat("[[slow:5]] a b c")) as r:
                    started.set()
                    async for _ in r.aiter_bytes():
                        pass

            task = asyncio.create_task(read_slowly())
            await asyncio.wait_for(started.wait(), 10)
            assert pools.busy == [1] + [0] * (POOLS - 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert pools.busy == [0] * POOLS

    asyncio.run(main())
