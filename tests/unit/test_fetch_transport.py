"""fetch.fetch through an injected httpx2.MockTransport (in-process, no daemon, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx2
import pytest

from assistantd import errors, extract, fetch

URL = "http://203.0.113.7/page"  # an address literal: no DNS look-up
LIMITS = fetch.Limits(max_bytes=10_000, timeout_s=30.0, max_redirects=3)


def get(handler: httpx2.MockTransport, limits: fetch.Limits = LIMITS) -> fetch.Page | None:
    return asyncio.run(fetch.fetch(URL, limits, transport=handler))


def failure(handler: httpx2.MockTransport, limits: fetch.Limits = LIMITS) -> errors.FetchFailed:
    with pytest.raises(errors.FetchFailed) as caught:
        get(handler, limits)
    return caught.value


def test_body_labelled_with_a_whatwg_label_decodes_as_browsers_do() -> None:
    """A body labelled charset=latin1 decodes as windows-1252, so byte 0x80 reads as a euro sign."""

    def serve(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/plain; charset=latin1"}
        return httpx2.Response(200, headers=headers, content=b"price: 5 \x80")

    page = get(httpx2.MockTransport(serve))
    assert page is not None
    assert page.charset == "latin1"
    assert extract.decode(page.body, page.charset, html=False) == "price: 5 €"


def test_request_names_the_host_and_goes_to_the_pinned_address() -> None:
    """The request goes to the resolved address with the page's host in its Host header."""
    seen: list[httpx2.Request] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, headers={"content-type": "text/html"}, content=b"<p>hi</p>")

    page = get(httpx2.MockTransport(serve))
    assert page is not None and page.kind == "html" and page.body == b"<p>hi</p>"
    assert [r.url.host for r in seen] == ["203.0.113.7"]
    assert seen[0].headers["host"] == "203.0.113.7"
    assert seen[0].headers["user-agent"] == fetch.USER_AGENT


def test_redirect_chain_longer_than_the_limit_is_refused() -> None:
    """A chain of more redirects than max_redirects fails with too_many_redirects."""
    hops: list[str] = []

    def serve(request: httpx2.Request) -> httpx2.Response:
        hops.append(request.url.path)
        return httpx2.Response(302, headers={"location": f"/hop{len(hops)}"})

    err = failure(httpx2.MockTransport(serve))
    assert err.data["reason"] == "too_many_redirects"
    assert hops == ["/page", "/hop1", "/hop2", "/hop3"]  # the first request and 3 redirects


def test_redirect_chain_within_the_limit_is_followed() -> None:
    """A chain of exactly max_redirects redirects ends at the last page, whose URL is kept."""

    def serve(request: httpx2.Request) -> httpx2.Response:
        n = int(request.url.path.removeprefix("/page").removeprefix("/hop") or 0)
        if n < LIMITS.max_redirects:
            return httpx2.Response(302, headers={"location": f"/hop{n + 1}"})
        return httpx2.Response(200, headers={"content-type": "text/plain"}, content=b"end")

    page = get(httpx2.MockTransport(serve))
    assert page is not None and page.body == b"end"
    assert page.url == "http://203.0.113.7/hop3"


def test_body_declared_larger_than_the_limit_is_refused() -> None:
    """A Content-Length above max_bytes fails with too_large."""

    def serve(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/plain", "content-length": "10001"}
        return httpx2.Response(200, headers=headers, content=b"x" * 10_001)

    err = failure(httpx2.MockTransport(serve))
    assert err.data["reason"] == "too_large"
    assert "10,001 bytes" in err.message


def test_streamed_body_growing_past_the_limit_is_refused() -> None:
    """A body without Content-Length that grows past max_bytes fails with too_large."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"y" * 1000

    def serve(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/plain"}, content=chunks())

    err = failure(httpx2.MockTransport(serve))
    assert err.data["reason"] == "too_large"
    assert "larger than the limit of 10,000 bytes" in err.message
