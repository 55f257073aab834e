"""locks: one request per conversation, shared by chat/send and summarize (in-process)."""

from __future__ import annotations

import asyncio

import pytest

from assistantd import errors
from assistantd.locks import ConversationLocks


def test_a_held_conversation_refuses_a_second_holder_with_busy() -> None:
    """A second hold of a held conversation raises -32005 with the caller's message and id."""

    async def go() -> errors.Busy:
        locks = ConversationLocks()
        async with locks.hold("c1", "first"):
            with pytest.raises(errors.Busy) as e:
                async with locks.hold("c1", "a request is already running"):
                    pass
            return e.value

    err = asyncio.run(go())
    assert err.code == -32005
    assert err.message == "a request is already running"
    assert err.data == {"conversation_id": "c1"}


def test_a_conversation_created_midway_is_held_and_released() -> None:
    """A hold begun without an id holds the id it takes later, and releases it on exit."""

    async def go() -> tuple[bool, bool]:
        locks = ConversationLocks()
        async with locks.hold(None, "busy") as held:
            held.take("new")
            held.take("new")  # taking what is held already is a no-op
            during = "new" in locks
        return during, "new" in locks

    assert asyncio.run(go()) == (True, False)


def test_a_failed_request_releases_its_conversation() -> None:
    """An exception inside the hold releases the conversation for the next request."""

    async def go() -> bool:
        locks = ConversationLocks()
        with pytest.raises(ValueError):
            async with locks.hold("c1", "busy"):
                raise ValueError
        async with locks.hold("c1", "busy"):
            return "c1" in locks

    assert asyncio.run(go())
