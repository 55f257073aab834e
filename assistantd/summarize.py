"""``summarize/url`` and ``summarize/text``: text of any length, with a model of any window.

Text that does not fit one request is split on paragraph boundaries (then lines,
sentences, words) into chunks that leave room for the instructions and the answer.
The chunks are summarized at most ``summarize.concurrency`` at a time (map); the
partial summaries are combined, in rounds while they are still too long for one
request (reduce). Only the last request streams, as ``chat/delta``. For every request
the prompt's estimate plus its ``max_tokens`` stays within the model's window
(``tokens.estimate`` over-counts, so the provider's own count is lower still).

The summary is stored as a conversation whose user message carries the source text
as a ``context`` attachment (all of it, or the beginning that leaves room for a
follow-up), so a later ``chat/send`` on it can answer questions about the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from assistantd import errors, paths, tokens
from assistantd.cancel import answer_cancelled, to_the_end
from assistantd.chat import MAX_MESSAGE_CHARS, Chat, Turn, Usage, title_from
from assistantd.config import SummarizeConfig
from assistantd.extract import Extractor
from assistantd.fetch import Entry, Limits, PageCache, check_url, fetch, freshness
from assistantd.locks import Held
from assistantd.providers import Completion, ContextExceeded, Providers, StreamBroken
from assistantd.roles import SUMMARIZE, Role, fill
from assistantd.rpc import Params, RequestContext, Result
from assistantd.store import Store
from assistantd.usage import conversation_var, kind_var

MAP_SYSTEM = (
    "You SUMMARIZE one part of a longer text{about}. Write a concise summary of this "
    "part: its main points, facts, names and numbers, in the language of the text. "
    "No preamble."
)
REDUCE_SYSTEM = (
    "You SUMMARIZE a text{about} from summaries of its consecutive parts. Combine "
    "them into one coherent summary in the language of the text, without "
    "repeating yourself. No preamble."
)
# The summary itself follows the ``summarize`` role's prompt (assistantd/roles.py, which
# a config can override); a long text's last request adds this to it.
COMBINE_NOTE = (
    "The text comes as summaries of its consecutive parts: combine them into one "
    "coherent summary, without repeating yourself."
)
FOLLOWUP_SYSTEM = (
    "You answer questions about {what}. Its text is attached to the first user "
    "message, and your summary of it follows that message."
)
MIN_CHUNK = 16  # tokens: below this the window is too small to summarize anything
# Ever finer boundaries for text that does not fit, each with the glue that rejoins it.
LEVELS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\n\s*\n"), "\n\n"),
    (re.compile(r"\n"), "\n"),
    (re.compile(r"(?<=[.!?。！？])\s+"), " "),
    (re.compile(r"\s+"), " "),
)


class _Options(Params):
    model: str | None = None
    provider: str | None = None
    instructions: str | None = Field(default=None, max_length=20_000)
    conversation_id: str | None = None
    stream: bool = True
    # A named prompt and settings (roles/list); default ``summarize``. Its prompt is the
    # summary's instructions; explicit model and provider beat the role's.
    role: str | None = Field(default=None, min_length=1, max_length=200)


class UrlParams(_Options):
    url: str = Field(min_length=1, max_length=8192)


class TextParams(_Options):
    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    title: str | None = Field(default=None, max_length=1000)


class SummarizeResult(Result):
    conversation_id: str | None  # null only when cancelled before there was text
    message_id: str | None
    text: str
    url: str | None
    title: str | None
    chars: int
    chunks: int
    usage: Usage | None
    model: str
    provider: str
    finish_reason: str
    role: str | None = None  # the role the summary followed


# -- splitting -------------------------------------------------------------------------


def _pack(pieces: list[str], budget: int, glue: str) -> list[str]:
    """Join consecutive pieces (each within budget) greedily into chunks within budget.

    estimate(a + glue + b) <= estimate(a) + estimate(b) + 1, so the running sum bounds it."""
    out: list[str] = []
    group: list[str] = []
    cost = 0
    for piece in pieces:
        c = tokens.estimate(piece)
        if group and cost + 1 + c > budget:
            out.append(glue.join(group))
            group, cost = [], 0
        cost += c + (1 if group else 0)
        group.append(piece)
    if group:
        out.append(glue.join(group))
    return out


def split(text: str, budget: int, level: int = 0) -> list[str]:
    """``text`` in chunks of at most ``budget`` estimated tokens, cut at the coarsest
    boundary that works: paragraphs, lines, sentences, words, then characters."""
    text = text.strip()
    if tokens.estimate(text) <= budget:
        return [text] if text else []
    if level == len(LEVELS):
        n = max(1, budget * 3 // 4)  # a character is at most 4 bytes: 4/3 of a token
        return [text[i : i + n] for i in range(0, len(text), n)]
    pattern, glue = LEVELS[level]
    parts = [p for p in pattern.split(text) if p.strip()]
    if len(parts) == 1:
        return split(text, budget, level + 1)
    return _pack([q for p in parts for q in split(p, budget, level + 1)], budget, glue)


def head(text: str, budget: int) -> str:
    """The beginning of ``text`` within ``budget`` tokens, cut at a boundary."""
    first = split(text[: budget * 4], budget)
    return first[0] if first else ""


def group(items: list[str], budget: int) -> list[str]:
    """Partial summaries packed into reduce inputs. Each is cut to half the budget
    first, so every input but the last holds two or more: each round halves the count."""
    half = (budget - 1) // 2
    return _pack(
        [it if tokens.estimate(it) <= half else head(it, half) for it in items], budget, "\n\n"
    )


def _first_error(eg: BaseExceptionGroup[Any]) -> BaseException:
    """The first real error of a task group's failure (the others were cancelled by it)."""
    first = eg.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


# -- one request -----------------------------------------------------------------------


@dataclass
class _Run:
    """One summary in progress: what is known, and what exists if it is cancelled."""

    ctx: RequestContext
    turn: Turn
    options: _Options
    concurrency: int
    role: Role
    url: str | None = None
    title: str | None = None
    text: str = ""
    cid: str | None = None
    own: bool = False  # the conversation was created by this run
    chunks: int = 0
    levels: list[list[str | None]] = field(default_factory=list)
    final: Completion | None = None
    usage: dict[str, int] | None = None
    done: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def progress(self, stage: str, done: int, total: int) -> None:
        with contextlib.suppress(ConnectionResetError):  # the session cancels this request
            await self.ctx.notify(
                "summarize/progress", {"stage": stage, "done": done, "total": total}
            )

    def add_usage(self, out: Completion) -> None:
        if out.usage:
            self.usage = self.usage or {}
            for k, v in out.usage.items():
                self.usage[k] = self.usage.get(k, 0) + v

    def so_far(self) -> str:
        """The summary, or the most complete partial summaries when there is none yet."""
        if self.final is not None and self.final.text:
            return self.final.text
        for level in reversed(self.levels[1:]):
            if all(p is not None for p in level):
                return "\n\n".join(p for p in level if p)
        return "\n\n".join(p for p in self.levels[0] if p) if self.levels else ""

    def system(self, template: str) -> str:
        about = f' titled "{self.title}"' if self.title else ""
        text = fill(template, {"about": about})
        if self.options.instructions:
            text += f"\n\nThe user's instructions for the summary: {self.options.instructions}"
        return text


class Summarizer:
    def __init__(
        self,
        store: Store,
        providers: Providers,
        chat: Chat,
        settings: Callable[[], SummarizeConfig],
    ) -> None:
        self.store, self.providers, self.chat, self.settings = store, providers, chat, settings
        self.cache = PageCache(paths.dirs().cache / "pages")
        self.extractor = Extractor()  # the daemon closes it at shutdown

    async def url(self, params: UrlParams, ctx: RequestContext) -> SummarizeResult:
        """Fetch a web page, extract its main text and summarize it (in parts when long).

        Progress arrives as ``summarize/progress`` and the summary as ``chat/delta``; the
        summary is stored as a conversation that ``chat/send`` can continue."""
        url = params.url.strip()
        check_url(url)  # a bad URL fails before anything else happens
        return await self._go(params, ctx, lambda run: self._load(run, url))

    async def text(self, params: TextParams, ctx: RequestContext) -> SummarizeResult:
        """Summarize text the client already has (an editor buffer), as ``summarize/url`` does."""

        async def load(run: _Run) -> None:
            run.text, run.title = params.text.strip(), params.title
            if not run.text:
                raise errors.InvalidParams("the text is empty", reason="no_text")

        return await self._go(params, ctx, load)

    async def _go(
        self, params: _Options, ctx: RequestContext, load: Callable[[_Run], Awaitable[None]]
    ) -> SummarizeResult:
        conv = await self.chat.conversation(params.conversation_id)
        busy = "a request is already running in this conversation"
        async with self.chat.locks.hold(conv["id"] if conv else None, busy) as held:
            return await self._held(params, ctx, load, conv, held)

    async def _held(
        self,
        params: _Options,
        ctx: RequestContext,
        load: Callable[[_Run], Awaitable[None]],
        conv: dict[str, Any] | None,
        held: Held,
    ) -> SummarizeResult:
        role = self.chat.roles.get(params.role or SUMMARIZE)
        model, provider = params.model or role.model, params.provider or role.provider
        turn = await self.chat.resolve(model, provider, role.max_tokens, conv)
        run = _Run(ctx, turn, params, self.settings().concurrency, role)
        if conv:
            run.cid = conv["id"]
        # The usage ledger's rows name their conversation and what they were for.
        kind, owner = kind_var.set("summarize"), conversation_var.set(run.cid)
        try:
            return await self._pipeline(run, load, held)
        finally:
            kind_var.reset(kind)
            conversation_var.reset(owner)

    async def _pipeline(
        self,
        run: _Run,
        load: Callable[[_Run], Awaitable[None]],
        held: Held,
    ) -> SummarizeResult:
        try:
            await self.providers.connection(run.turn.provider, keyring=False)  # no key: fail early
            await load(run)
            if run.cid is None:
                run.cid = await self.store.run(
                    lambda: self.store.create_conversation(
                        title=title_from("Summary: " + (run.title or run.url or run.text)),
                        model=run.turn.model,
                        provider=run.turn.provider.name,
                        system=FOLLOWUP_SYSTEM.format(what=self._what(run)),
                        source={"url": run.url, "title": run.title, "chars": len(run.text)},
                        role=run.role.name,
                    )
                )
                run.own = True
                held.take(run.cid)
            conversation_var.set(run.cid)  # reset by _go
            await self._summarize(run)
        except asyncio.CancelledError:
            mid = await to_the_end(self._store(run, "partial", "cancelled"))
            if not answer_cancelled(run.ctx):
                raise
            return self._result(run, mid, "cancelled")
        except StreamBroken as broken:
            mid = await self._store(run, "partial")
            broken.error.data.update(
                conversation_id=run.cid, message_id=mid, partial_text=run.so_far()
            )
            raise broken.error from None
        except Exception:
            if run.own and run.cid:  # nothing came of it: leave no empty conversation
                await self.store.run(self.store.delete, run.cid)
            raise
        mid = await self._store(run, "complete")
        finish = run.final.finish_reason if run.final else None
        return self._result(run, mid, finish or "stop")

    async def _load(self, run: _Run, url: str) -> None:
        """The page's text: from the cache when fresh or unchanged (304), else fetched."""
        run.url = url
        cfg = self.settings()
        await run.progress("fetch", 0, 1)
        entry = await asyncio.to_thread(self.cache.get, url)
        page = None
        if entry is None or not entry.fresh():
            page = await fetch(
                url,
                Limits(
                    cfg.max_bytes, cfg.timeout_s, cfg.max_redirects, cfg.allow_private_redirects
                ),
                etag=entry.etag if entry else None,
                last_modified=entry.last_modified if entry else None,
                network=self.providers.network,
            )
            if page is None and entry is not None:  # 304 Not Modified
                await asyncio.to_thread(self.cache.put, entry)
        await run.progress("fetch", 1, 1)
        await run.progress("extract", 0, 1)
        if page is not None:
            title, text = await self.extractor.read(
                url, page.kind, page.charset, page.body, cfg.extract_timeout_s
            )
            if not text:
                raise errors.FetchFailed(
                    "the page has no text to summarize", url=url, reason="no_text"
                )
            fresh = freshness(page)
            entry = Entry(
                url, page.url, title, text, page.etag, page.last_modified, 0.0, fresh or 0.0
            )
            if fresh is not None:
                await asyncio.to_thread(self.cache.put, entry)
        assert entry is not None
        await run.progress("extract", 1, 1)
        run.title, run.text = entry.title, entry.text

    # -- map and reduce ----------------------------------------------------------------

    async def _summarize(self, run: _Run) -> None:
        turn = run.turn
        prompt = run.role.system
        whole, mapper, reducer, last = (
            run.system(t)
            for t in (prompt, MAP_SYSTEM, REDUCE_SYSTEM, f"{prompt}\n\n{COMBINE_NOTE}")
        )
        overhead = tokens.PER_REQUEST + 2 * tokens.PER_MESSAGE
        instructions = max(map(tokens.estimate, (whole, mapper, reducer, last)))
        budget = turn.window - turn.reserve - overhead - instructions
        if budget < MIN_CHUNK:
            raise errors.InvalidParams(
                f"{turn.model}'s context window of {turn.window} tokens leaves no room for text "
                "after the instructions and the answer",
                reason="too_long",
            )
        chunks = split(run.text, budget)
        run.chunks = len(chunks)
        if len(chunks) == 1:
            await run.progress("map", 0, 1)
            await self._final(run, whole, chunks[0])
            await run.progress("map", 1, 1)
            return
        await run.progress("map", 0, len(chunks))
        level = await self._parallel(run, "map", mapper, chunks, len(chunks))
        run.done["reduce"] = 0
        while len(inputs := group(level, budget)) > 1:
            total = run.done["reduce"] + len(inputs) + 1  # this round, and at least the last
            await run.progress("reduce", run.done["reduce"], total)
            level = await self._parallel(run, "reduce", reducer, inputs, total)
        total = run.done["reduce"] + 1
        await run.progress("reduce", total - 1, total)
        await self._final(run, last, inputs[0])
        await run.progress("reduce", total, total)

    async def _parallel(
        self, run: _Run, stage: str, system: str, texts: list[str], total: int
    ) -> list[str]:
        """Summarize ``texts`` with at most ``run.concurrency`` requests in flight."""
        out: list[str | None] = [None] * len(texts)
        run.levels.append(out)
        gate = asyncio.Semaphore(run.concurrency)
        run.done.setdefault(stage, 0)

        async def one(i: int) -> None:
            async with gate:
                out[i] = await self._partial(run, system, texts[i])
            async with run.lock:  # progress in order, one count per finished request
                run.done[stage] += 1
                await run.progress(stage, run.done[stage], total)

        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(len(texts)):
                    tg.create_task(one(i))
        except BaseExceptionGroup as e:
            raise _first_error(e) from None
        return [p or "" for p in out]

    async def _partial(self, run: _Run, system: str, text: str, depth: int = 0) -> str:
        """One non-streamed partial summary, with room for a short answer."""
        out = Completion()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        try:
            await self.providers.complete(
                run.turn.provider,
                run.turn.model,
                messages,
                out,
                stream=False,
                temperature=run.role.temperature,
                max_tokens=max(16, run.turn.reserve // 2),
            )
        except ContextExceeded:
            # The provider counts more tokens than the estimate: halve the text, once.
            halves = split(text, max(MIN_CHUNK, tokens.estimate(text) // 2))
            if depth > 0 or len(halves) < 2:
                raise self._too_long(run) from None
            return "\n\n".join([await self._partial(run, system, h, depth + 1) for h in halves])
        run.add_usage(out)
        return out.text.strip()

    async def _final(self, run: _Run, system: str, text: str) -> None:
        """The last request: the summary itself, streamed as ``chat/delta``."""
        run.final = out = Completion()
        cid = run.cid

        async def on_delta(delta: str, lps: list[dict[str, Any]] | None) -> None:
            with contextlib.suppress(ConnectionResetError):
                await run.ctx.notify("chat/delta", {"conversation_id": cid, "text": delta})

        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        try:
            await self.providers.complete(
                run.turn.provider,
                run.turn.model,
                messages,
                out,
                stream=run.options.stream,
                on_delta=on_delta if run.options.stream else None,
                temperature=run.role.temperature,
                max_tokens=run.turn.reserve,
            )
        except ContextExceeded:
            raise self._too_long(run) from None
        run.add_usage(out)

    def _too_long(self, run: _Run) -> errors.RpcError:
        return errors.UpstreamError(
            f"{run.turn.model} refused a part as too long for its context window",
            provider=run.turn.provider.name,
            status=400,
            reason="context_length_exceeded",
        )

    # -- storing -----------------------------------------------------------------------

    @staticmethod
    def _what(run: _Run) -> str:
        if run.url:
            return f'the page "{run.title}" ({run.url})' if run.title else f"the page {run.url}"
        return f'the text "{run.title}"' if run.title else "a text the user gave"

    async def _store(self, run: _Run, status: str, finish: str | None = None) -> str | None:
        """Store the request (with the source text) and the summary, however far it got."""
        if run.cid is None:
            return None
        cid, turn, summary = run.cid, run.turn, run.so_far()
        ask = f"Summarize {self._what(run)}."
        if run.options.instructions:
            ask += f"\n\nInstructions: {run.options.instructions}"
        # Room for the source: the window less the follow-up's answer, a question, the
        # system prompt, this request and the summary.
        room = (
            turn.window
            - turn.reserve
            - turn.window // 8
            - tokens.PER_REQUEST
            - 4 * tokens.PER_MESSAGE
            - 16
            - sum(
                map(tokens.estimate, (FOLLOWUP_SYSTEM.format(what=self._what(run)), ask, summary))
            )
        )
        excerpt = run.text if tokens.estimate(run.text) <= room else ""
        if not excerpt and room >= 2 * MIN_CHUNK:
            excerpt = head(run.text, room - MIN_CHUNK)
            excerpt += f"\n\n[… the first {len(excerpt):,} of {len(run.text):,} characters]"
        context = [{"name": run.title or run.url or "text", "text": excerpt}] if excerpt else None
        final = run.final.usage if run.final and run.final.text == summary else None
        finish = finish or (run.final.finish_reason if run.final else None)
        await self.store.run(lambda: self.store.add_message(cid, "user", ask, context=context))
        return await self.chat.store_answer(
            cid,
            turn,
            summary,
            status=status,
            finish=finish,
            usage=run.usage,
            tokens=final.get("completion_tokens") if final else None,
        )

    def _result(self, run: _Run, mid: str | None, finish: str) -> SummarizeResult:
        return SummarizeResult(
            conversation_id=run.cid if mid else None,
            message_id=mid,
            text=run.so_far(),
            url=run.url,
            title=run.title,
            chars=len(run.text),
            chunks=run.chunks,
            usage=Usage(**run.usage) if run.usage else None,
            model=run.turn.model,
            provider=run.turn.provider.name,
            finish_reason=finish,
            role=run.role.name,
        )
