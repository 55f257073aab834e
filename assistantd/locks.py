"""One request at a time per conversation: ``chat/send`` and ``summarize/*`` share this lock.

``async with locks.hold(cid, message) as held:`` takes the conversation ``cid`` (None: a new
conversation, not known yet) or raises -32005 ``busy`` with ``message``; a conversation
created midway is taken with ``held.take(cid)``. Leaving the block releases what was taken.
Taking and checking happen without an await in between, so two requests cannot both pass.
"""

from __future__ import annotations

from types import TracebackType

from assistantd import errors


class ConversationLocks:
    """The conversations that have a request running (one at most each)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def __contains__(self, cid: object) -> bool:
        return cid in self._held

    def hold(self, cid: str | None, message: str) -> Held:
        """An async context manager that holds ``cid`` (and any later ``take``) while open."""
        return Held(self, cid, message)


class Held:
    """What one request holds: at most one conversation, released on exit."""

    def __init__(self, locks: ConversationLocks, cid: str | None, message: str) -> None:
        self._locks = locks
        self._first = cid
        self._message = message
        self.cid: str | None = None

    def take(self, cid: str) -> None:
        """Hold ``cid`` too (a conversation that got its id midway); -32005 if it is taken."""
        if cid == self.cid:
            return
        if self.cid is not None:
            raise RuntimeError(f"already holding {self.cid}, not {cid}")
        if cid in self._locks._held:
            raise errors.Busy(self._message, conversation_id=cid)
        self._locks._held.add(cid)
        self.cid = cid

    async def __aenter__(self) -> Held:
        if self._first:
            self.take(self._first)
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.cid is not None:
            self._locks._held.discard(self.cid)
            self.cid = None
