"""The ``conversations/*`` methods: list and search, read, rename, delete, fork, export."""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from pydantic import Field

from assistantd import errors
from assistantd.attachments import Blobs
from assistantd.chat import Usage
from assistantd.models import Model
from assistantd.rpc import Params, RequestContext, Result
from assistantd.store import BadCursor, Store
from assistantd.threads import off_loop


class ConversationSummary(Model):
    id: str
    title: str
    model: str | None
    provider: str | None
    created_at: str
    updated_at: str
    message_count: int


class ListParams(Params):
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    query: str | None = None
    before: str | None = Field(
        default=None,
        description="the `next` of the page before: the page after it, at any depth at"
        " the cost of the first (not with `query`)",
    )


class ConversationList(Result):
    conversations: list[ConversationSummary]
    total: int = Field(
        description="matching conversations; past 1,000 search matches a lower bound"
        " (`total_exact` false)"
    )
    total_exact: bool = True
    next: str | None = Field(
        default=None,
        description="an opaque cursor for `before`: the next page; null on the last page"
        " (and with `query`)",
    )


class IdParams(Params):
    id: str


class Message(Model):
    id: str
    role: str
    content: str
    created_at: str
    status: str
    usage: Usage | None
    model: str | None
    provider: str | None = None
    # {name, text?, type?, sha256?, size?, path?}: images and PDFs by their blob's sha256
    context: list[dict[str, Any]] | None = None
    finish_reason: str | None = None


class Conversation(Result):
    id: str
    title: str
    model: str | None
    provider: str | None
    system: str | None
    role: str | None = None  # the role it was started with; continuing it keeps the role
    created_at: str
    updated_at: str
    source: dict[str, Any] | None = None
    messages: list[Message]


class RenameParams(Params):
    id: str
    title: str = Field(min_length=1, max_length=500)


class RenameResult(Result):
    id: str
    title: str


class DeleteResult(Result):
    id: str
    deleted: bool


class ForkParams(Params):
    id: str
    message_id: str | None = None


class ForkResult(Result):
    id: str


class ExportParams(Params):
    id: str
    format: Literal["markdown", "json"] = "markdown"


class ExportResult(Result):
    format: str
    content: str


def _usage(m: dict[str, Any]) -> Usage | None:
    if m.get("total_tokens") is None:
        return None
    return Usage(
        prompt_tokens=m["prompt_tokens"] or 0,
        completion_tokens=m["completion_tokens"] or 0,
        total_tokens=m["total_tokens"] or 0,
        cached_tokens=m.get("cached_tokens"),
    )


def _missing(cid: str) -> errors.NotFound:
    return errors.NotFound(f"no conversation {cid!r}", kind="conversation", id=cid)


BLOB_GRACE_S = 60.0


class Conversations:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.blobs = Blobs(store.path.parent / "blobs")

    async def list(self, p: ListParams, ctx: RequestContext) -> ConversationList:
        """Conversations, newest first; ``query`` searches titles and messages."""
        if p.before is not None and p.query:
            raise errors.InvalidParams(
                "`before` pages the plain list; page a search with `offset`",
                reason="bad_cursor",
            )
        try:
            page = await self.store.run(
                self.store.list_conversations, p.limit, p.offset, p.query, p.before
            )
        except BadCursor:
            raise errors.InvalidParams(
                "`before` is not a cursor from conversations/list", reason="bad_cursor"
            ) from None
        return ConversationList(
            conversations=[ConversationSummary(**r) for r in page.conversations],
            total=page.total,
            total_exact=page.total_exact,
            next=page.next,
        )

    async def load(self, cid: str) -> Conversation:
        def read() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            return self.store.conversation(cid), self.store.messages(cid)

        conv, msgs = await self.store.run(read)
        if conv is None:
            raise _missing(cid)
        return Conversation(
            **{
                k: conv[k]
                for k in (
                    "id",
                    "title",
                    "model",
                    "provider",
                    "system",
                    "role",
                    "created_at",
                    "updated_at",
                )
            },
            source=json.loads(conv["source"]) if conv["source"] else None,
            messages=[
                Message(
                    id=m["id"],
                    role=m["role"],
                    content=m["content"],
                    created_at=m["created_at"],
                    status=m["status"],
                    usage=_usage(m),
                    model=m["model"],
                    provider=m["provider"],
                    context=json.loads(m["context"]) if m["context"] else None,
                    finish_reason=m["finish_reason"],
                )
                for m in msgs
            ],
        )

    async def get(self, p: IdParams, ctx: RequestContext) -> Conversation:
        """A conversation with all its messages."""
        return await self.load(p.id)

    async def rename(self, p: RenameParams, ctx: RequestContext) -> RenameResult:
        """Give a conversation a new title."""
        if not await self.store.run(self.store.rename, p.id, p.title):
            raise _missing(p.id)
        return RenameResult(id=p.id, title=p.title)

    async def delete(self, p: IdParams, ctx: RequestContext) -> DeleteResult:
        """Delete a conversation and its messages, and the blobs only it referred to."""
        shas = await self.store.run(self._blob_refs, p.id)
        if not await self.store.run(self.store.delete, p.id):
            raise _missing(p.id)
        if shas:
            await self.store.run(self._drop_unreferenced, shas)
        return DeleteResult(id=p.id, deleted=True)

    def _blob_refs(self, cid: str) -> set[str]:
        rows = self.store.db.execute(
            "SELECT context FROM messages WHERE conversation_id=? AND context LIKE '%sha256%'",
            (cid,),
        )
        return {a["sha256"] for (ctx,) in rows for a in json.loads(ctx) if a.get("sha256")}

    def _drop_unreferenced(self, shas: set[str]) -> None:
        """Remove the blobs no message refers to any more (on the store's thread, after
        the delete). One written in the last minute is kept: a ``chat/send`` may be
        about to store the message that refers to it."""
        for sha in shas:
            used = self.store.db.execute(
                "SELECT 1 FROM messages WHERE context LIKE ? LIMIT 1", (f"%{sha}%",)
            ).fetchone()
            if not used:
                self.blobs.drop(sha, younger_than_s=BLOB_GRACE_S)

    async def fork(self, p: ForkParams, ctx: RequestContext) -> ForkResult:
        """A new conversation with the history up to and including ``message_id``."""
        try:
            new = await self.store.run(self.store.fork, p.id, p.message_id)
        except KeyError:
            raise errors.NotFound(
                f"no message {p.message_id!r} in {p.id!r}", kind="message", id=p.message_id
            ) from None
        if new is None:
            raise _missing(p.id)
        return ForkResult(id=new)

    async def export(self, p: ExportParams, ctx: RequestContext) -> ExportResult:
        """A conversation as Markdown or JSON."""
        conv = await self.load(p.id)
        if p.format == "json":
            await off_loop(lambda: self._inline_blobs(conv), "export-blobs")
            return ExportResult(format="json", content=conv.model_dump_json(indent=2))
        return ExportResult(format="markdown", content=to_markdown(conv, self.blobs))

    def _inline_blobs(self, conv: Conversation) -> None:
        """Each stored image or PDF as base64 ``data`` beside its sha256 (a blocking
        read: off the event loop)."""
        for m in conv.messages:
            for a in m.context or []:
                if a.get("sha256") and (data := self.blobs.get(a["sha256"])) is not None:
                    a["data"] = base64.b64encode(data).decode("ascii")


def to_markdown(conv: Conversation, blobs: Blobs | None = None) -> str:
    lines = [
        f"# {conv.title}",
        "",
        f"- model: {conv.model or '-'} ({conv.provider or '-'})",
        f"- created: {conv.created_at}",
        "",
    ]
    if conv.source:
        lines += [f"- source: {conv.source.get('url') or conv.source.get('title') or ''}", ""]
    if conv.system:
        lines += ["## System", "", conv.system, ""]
    for m in conv.messages:
        head = {"user": "## User", "assistant": "## Assistant"}.get(m.role, f"## {m.role}")
        if m.status != "complete":
            head += f" ({m.status})"
        lines += [head, "", m.content, ""]
        for a in m.context or []:
            if a.get("sha256") and blobs is not None:
                uri = blobs.path(a["sha256"]).as_uri()
                name = a["name"].replace("[", "\\[").replace("]", "\\]")
                size = a.get("size", 0)
                lines += [f"- [{name}]({uri}) ({a.get('type', '?')}, {size} bytes)", ""]
            if a.get("text") is None:
                continue
            lines += [
                f"<details><summary>{a['name']}</summary>",
                "",
                "```",
                a["text"],
                "```",
                "",
                "</details>",
                "",
            ]
    return "\n".join(lines)
