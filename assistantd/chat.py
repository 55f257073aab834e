"""``chat/send``: a conversation turn, streamed, stored, trimmed to the context window.

The user's message is stored before the provider is called, and whatever text came
back is stored whatever happens next (finished, cancelled, broken off), so no turn
is ever lost. One send runs at a time per conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import PurePath
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from assistantd import attachments, compaction, errors, tokens
from assistantd.attachments import Blobs, Loaded
from assistantd.cancel import answer_cancelled, to_the_end
from assistantd.compaction import needs_compaction, split_point, summary_system
from assistantd.locks import ConversationLocks, Held
from assistantd.models import Model
from assistantd.providers import (
    Completion,
    ContextExceeded,
    Provider,
    Providers,
    StreamBroken,
)
from assistantd.roles import Roles
from assistantd.rpc import Params, RequestContext, Result
from assistantd.store import Store, new_id
from assistantd.threads import off_loop
from assistantd.usage import Ledger, conversation_var

log = logging.getLogger("assistantd.chat")

MAX_MESSAGE_CHARS = 4_000_000  # a bigger message is refused before anything is stored
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VAR_CHARS = 4096


class Attachment(Model):
    """One context item: exactly one of ``text``, ``path`` (read by the daemon) or
    ``data`` (base64). Its kind is sniffed from its bytes (docs/protocol.md)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=1000)  # default: the file's name
    text: str | None = None
    path: str | None = Field(default=None, max_length=4096)  # absolute, on the daemon's machine
    data: str | None = None  # base64
    type: str | None = Field(default=None, max_length=200)  # MIME; must agree with the bytes

    @model_validator(mode="after")
    def _one_source(self) -> Attachment:
        given = [k for k in ("text", "path", "data") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a context item has exactly one of text, path or data")
        if self.path is not None and not PurePath(self.path).is_absolute():
            raise ValueError("path must be absolute (the daemon has its own working folder)")
        if self.text is not None and self.name is None:
            raise ValueError("a text context item needs a name")
        return self


class Usage(Model):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None = None


class TopLogprob(Model):
    token: str
    logprob: float


class TokenLogprob(Model):
    token: str
    logprob: float
    top_logprobs: list[TopLogprob] = []


class ChatParams(Params):
    message: str = Field(max_length=MAX_MESSAGE_CHARS)
    conversation_id: str | None = None
    model: str | None = None
    provider: str | None = None
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    context: list[Attachment] | None = None
    stream: bool = True
    compact: Literal["trim", "summarize"] | None = None  # default: the config's ``compact``
    # A named prompt and settings (roles/list); explicit params beat the role's values.
    # Default: the conversation's role when continuing one, else none.
    role: str | None = Field(default=None, min_length=1, max_length=200)
    # Values for the role's ``{name}`` placeholders (the shell clients send shell and os).
    vars: dict[str, str] | None = Field(default=None, max_length=32)
    # A JSON Schema the answer must meet: asked of the provider, checked here.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @field_validator("vars")
    @classmethod
    def _vars(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (v or {}).items():
            if not VAR_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a placeholder name ([A-Za-z_][A-Za-z0-9_]*)")
            if len(value) > MAX_VAR_CHARS:
                raise ValueError(f"{name!r} is longer than {MAX_VAR_CHARS} characters")
        return v


class ChatResult(Result):
    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    conversation_id: str
    message_id: str
    text: str
    model: str
    provider: str
    finish_reason: str
    usage: Usage | None
    logprobs: list[TokenLogprob] | None
    trimmed: int
    compacted: int = 0  # messages folded into the conversation's stored summary just now
    cost: float | None = None  # USD; null when the model's price is unknown
    warnings: list[str] = []
    role: str | None = None  # the role this answer used: the one asked for, else the conversation's
    json_: Any = Field(default=None, alias="json")  # with ``schema``: the answer, parsed


def contexts(message: dict[str, Any]) -> list[dict[str, Any]]:
    context = message.get("context")
    if isinstance(context, str):
        context = json.loads(context)
    return list(context or [])


def is_image(item: dict[str, Any]) -> bool:
    return item.get("type") in attachments.IMAGE_TYPES


def is_pdf(item: dict[str, Any]) -> bool:
    return item.get("type") == attachments.PDF_TYPE


def render(message: dict[str, Any], urls: dict[str, str] | None = None) -> dict[str, Any]:
    """A stored message as the provider sees it: text attachments follow the text; images,
    as data URLs from ``urls`` (by sha256), follow as image parts, and PDFs found there as
    file parts. An image not in ``urls`` is named in the text instead; a PDF not there
    goes as its extracted text."""
    content = message["content"]
    parts: list[str] = []
    binary: list[dict[str, Any]] = []
    extra_tokens = 0
    for a in contexts(message):
        url = (urls or {}).get(a.get("sha256") or "")
        if is_image(a):
            if url is not None:
                binary.append({"type": "image_url", "image_url": {"url": url}})
                extra_tokens += attachments.IMAGE_TOKENS
            else:
                parts.append(f'<context name="{a["name"]}">\n(an image, not sent)\n</context>')
        elif is_pdf(a) and url is not None:
            binary.append({"type": "file", "file": {"filename": a["name"], "file_data": url}})
            extra_tokens += tokens.estimate(a.get("text") or "")  # at least its text
        elif a.get("text") is not None:
            parts.append(f'<context name="{a["name"]}">\n{a["text"]}\n</context>')
    if parts:
        content = content + "\n\n" + "\n\n".join(parts)
    out = {"role": message["role"], "content": content, "tokens": message.get("tokens")}
    if binary:
        out["content"] = [{"type": "text", "text": content}, *binary]
        out["tokens"] = tokens.estimate(content) + extra_tokens
    return out


def title_from(text: str) -> str:
    line = " ".join(text.strip().split())
    return line[:60] + ("…" if len(line) > 60 else "") or "(untitled)"


class Turn:
    """What one ``chat/send`` resolved to, before the provider is called."""

    def __init__(self, provider: Provider, model: str, window: int, reserve: int) -> None:
        self.provider, self.model, self.window, self.reserve = provider, model, window, reserve
        self.compacted = 0  # messages folded into the running summary by this request
        self.warnings: list[str] = []


class Chat:
    def __init__(
        self,
        store: Store,
        providers: Providers,
        ledger: Ledger,
        default_model: Callable[[], Awaitable[str]],
        roles: Roles,
    ) -> None:
        self.store = store
        self.providers = providers
        self.ledger = ledger
        self.default_model = default_model  # decided by the daemon
        self.roles = roles
        self.locks = ConversationLocks()  # shared with summarize: one request per conversation
        self.blobs = Blobs(store.path.parent / "blobs")

    async def conversation(self, cid: str | None) -> dict[str, Any] | None:
        """The stored conversation ``cid`` (None for None); -32004 when there is none."""
        if not cid:
            return None
        conv = await self.store.run(self.store.conversation, cid)
        if conv is None:
            raise errors.NotFound("no such conversation", kind="conversation", id=cid)
        return conv

    async def resolve(
        self,
        model: str | None,
        provider: str | None,
        max_tokens: int | None,
        conv: dict[str, Any] | None = None,
    ) -> Turn:
        if conv and not model and not provider:
            model, provider = conv["model"], conv["provider"]
        if not model and provider:  # a provider alone: the model it serves, if it names one
            named = self.providers.get(provider)
            if named.managed and named.models:
                model = named.models[0]
        model = model or await self.default_model()
        p = self.providers.route(model, provider)
        window = self.providers.context_window(p, model)
        reserve = max_tokens or min(1024, window // 4)
        return Turn(p, model, window, reserve)

    def apply_role(self, params: ChatParams, conv: dict[str, Any] | None) -> ChatParams:
        """``params`` with the role's values where the request names none.

        A role given here supplies its prompt, model and provider; a continued
        conversation keeps its own (stored) prompt and model, and its role supplies the
        rest (temperature, max_tokens, compact)."""
        explicit = self.roles.get(params.role) if params.role else None
        role = explicit or self.roles.find(conv["role"] if conv else None)
        if role is None:
            return params
        update: dict[str, Any] = {
            "temperature": params.temperature
            if params.temperature is not None
            else role.temperature,
            "max_tokens": params.max_tokens or role.max_tokens,
            "compact": params.compact or role.compact,
        }
        if explicit:
            update["model"] = params.model or role.model
            update["provider"] = params.provider or role.provider
            update["system"] = (
                params.system if params.system is not None else role.prompt(params.vars)
            )
        return params.model_copy(update=update)

    async def send(self, params: ChatParams, ctx: RequestContext) -> ChatResult:
        """Send a message in a new or stored conversation; stream the answer as ``chat/delta``."""
        conv = await self.conversation(params.conversation_id)
        params = self.apply_role(params, conv)
        busy = "a chat/send is already running in this conversation"
        async with self.locks.hold(conv["id"] if conv else None, busy) as held:
            return await self._send(params, ctx, conv, held)

    async def _send(
        self, params: ChatParams, ctx: RequestContext, conv: dict[str, Any] | None, held: Held
    ) -> ChatResult:
        role_name = params.role or (conv["role"] if conv else None)
        cid: str | None = conv["id"] if conv else None
        turn: Turn | None = None
        stored = False
        loaded: list[Loaded] = []
        try:
            turn = await self.resolve(params.model, params.provider, params.max_tokens, conv)
            loaded = await self._load(params, turn)
            await self._starting_local(turn.provider, ctx)
            # fails early: no key, dead local server
            await self.providers.connection(turn.provider, keyring=False)
            conversation_var.set(cid)
            history = await self.store.run(self.store.messages, cid) if cid else []
            dangling = history[-1] if history and history[-1]["role"] == "user" else None
            if dangling is not None:
                history = history[:-1]  # an unanswered question is replaced by this one
            summary = await self.store.run(self.store.latest_compaction, cid) if cid else None
            if summary:  # the stored summary stands in for the turns it covers
                history = [m for m in history if m["seq"] > summary["upto_seq"]]
            images = await self._images(turn, history)
            images.update({a.sha256: a.url for a in loaded if a.sha256 and a.url})
            context = [a.stored() for a in loaded]
            new_msg = render(
                {"role": "user", "content": params.message, "context": context}, images
            )
            system_text = conv["system"] if conv and not params.role else params.system
            budget = turn.window - turn.reserve
            strategy = params.compact or self.providers.config.compact
            if strategy == "summarize" and cid and history:
                summary, history = await self._compact(
                    turn, cid, system_text, summary, history, new_msg, budget
                )
            system = summary_system(system_text, summary["content"] if summary else None)
            try:
                fit = tokens.fit(system, [render(m, images) for m in history] + [new_msg], budget)
            except tokens.TooLong as e:
                raise errors.InvalidParams(
                    f"the message does not fit {turn.model}'s context window of {turn.window} "
                    f"tokens ({e.needed} needed, {e.budget} available)",
                    reason="too_long",
                    tokens=e.needed,
                    budget=e.budget,
                ) from None

            cid, keeping = await self._start_question(
                params, turn, cid, False, loaded, dangling["id"] if dangling else None
            )
            held.take(cid)
            conversation_var.set(cid)
            stored = True
            try:
                result = await self._answer(params, ctx, turn, cid, fit, keeping)
            finally:  # the write is waited for whatever happened, and a failure said
                await asyncio.wait({keeping})
                if (failed := keeping.exception()) is not None:
                    log.error("storing the question failed: %s", failed)
            result.role = role_name
            if params.schema_ is not None and result.finish_reason != "cancelled":
                result.json_ = await self._check_answer(params.schema_, result)
            return result
        except asyncio.CancelledError:
            # Cancelled before the provider was called (``_answer`` handles the rest): the
            # contract still answers with a cancelled result, and the question is kept.
            if turn is None or not answer_cancelled(ctx):
                raise
            cid = await to_the_end(self._keep_question(params, turn, cid, stored, loaded))
            held.take(cid)
            mid = await to_the_end(
                self._store_answer(cid, turn, Completion(), "partial", "cancelled")
            )
            result = self._result(cid, mid, turn, Completion(), "cancelled", 0, False)
            result.role = role_name
            return result

    async def _starting_local(self, p: Provider, ctx: RequestContext) -> None:
        """Tell the client once when this request has to start a managed local server
        first (that takes seconds): ``chat/progress {stage: "starting_local", name}``."""
        if p.managed and not self.providers.local_ready(p.name):
            with contextlib.suppress(ConnectionResetError):
                await ctx.notify("chat/progress", {"stage": "starting_local", "name": p.name})

    async def _load(self, params: ChatParams, turn: Turn) -> list[Loaded]:
        """Read and check the request's attachments (and its schema) off the event loop;
        a refusal (-32602) comes before anything is stored or sent."""
        items = params.context or []
        if params.schema_ is not None:
            await off_loop(lambda: _check_schema(params.schema_ or {}), "schema-check")
        if not items:
            return []

        def load() -> list[Loaded]:
            out = [attachments.load_one(a.name, a.text, a.path, a.data, a.type) for a in items]
            for a in out:  # a provider that takes PDFs gets them as file parts
                if a.kind == "pdf" and a.data is not None and turn.provider.pdf_input:
                    a.url = attachments.data_url(a.type, a.data)
            return out

        async with asyncio.timeout(attachments.PDF_TIMEOUT_S):
            loaded = await off_loop(load, "attachments")
        images = [a for a in loaded if a.kind == "image"]
        if images and not self._takes_images(turn):
            raise errors.InvalidParams(
                f"{turn.model} does not take images ({images[0].name}); pick a model that"
                f' does, or set [models."{turn.model}"] vision = true if it can',
                reason="unsupported_type",
                model=turn.model,
                name=images[0].name,
            )
        return loaded

    def _takes_images(self, turn: Turn) -> bool:
        mc = self.providers.config.models.get(turn.model)
        vision = mc.vision if mc is not None else None
        return attachments.takes_images(turn.model, vision, turn.provider.managed)

    async def _images(self, turn: Turn, history: list[dict[str, Any]]) -> dict[str, str]:
        """The history's images (and PDFs, for a provider that takes them as files) as
        data URLs by sha256, read from the blob store; no images for a model that takes
        none (they are named in the text instead), no PDFs for a provider that takes
        none (they go as their extracted text)."""
        items = [a for m in history for a in contexts(m) if a.get("sha256")]
        wanted = {a["sha256"]: a["type"] for a in items if is_image(a)}
        if wanted and not self._takes_images(turn):
            turn.warnings.append(
                f"{turn.model} does not take images: the conversation's earlier images were"
                " left out"
            )
            wanted = {}
        pdfs = {a["sha256"]: a["type"] for a in items if is_pdf(a)}
        if pdfs and turn.provider.pdf_input:
            wanted.update(pdfs)
        else:
            pdfs = {}
        if not wanted:
            return {}

        def read() -> dict[str, str]:
            out = {}
            for sha, mime in wanted.items():
                data = self.blobs.get(sha)
                if data is not None:
                    out[sha] = attachments.data_url(mime, data)
            return out

        found = await off_loop(read, "blobs")
        if missing := len(wanted) - len(pdfs) - sum(sha not in pdfs for sha in found):
            turn.warnings.append(
                f"{missing} earlier image(s) are no longer stored and were left out"
            )
        return found

    async def _check_answer(self, schema: dict[str, Any], result: ChatResult) -> Any:
        """The answer parsed as JSON and valid under ``schema``; else -32002
        ``schema_mismatch`` (the answer stays stored)."""
        problem, value = await off_loop(lambda: _validate(schema, result.text), "schema-validate")
        if problem is not None:
            raise errors.UpstreamError(
                f"the answer does not match the schema: {problem}",
                reason="schema_mismatch",
                provider=result.provider,
                text=result.text,
                conversation_id=result.conversation_id,
                message_id=result.message_id,
            )
        return value

    async def _keep_question(
        self,
        params: ChatParams,
        turn: Turn,
        cid: str | None,
        stored: bool,
        loaded: list[Loaded] | None = None,
    ) -> str:
        """Store the user's message now (``_start_question``, waited for)."""
        cid, keeping = await self._start_question(params, turn, cid, stored, loaded)
        await asyncio.wait({keeping})
        return keeping.result()

    async def _start_question(
        self,
        params: ChatParams,
        turn: Turn,
        cid: str | None,
        stored: bool,
        loaded: list[Loaded] | None = None,
        dangling: str | None = None,
    ) -> tuple[str, asyncio.Future[str]]:
        """Queue the store's write of the user's message (in a new conversation, its id
        made here, when there is none yet; ``dangling``, an unanswered question it
        replaces, deleted) and return the conversation's id and the write's future. The
        provider is asked while the write runs: with many requests at once, waiting for
        the store's one thread first was most of the daemon's delay to a first token.
        Attachments' bytes go to the blob store before."""
        blobs = [a.data for a in loaded or [] if a.data is not None]
        if blobs and not stored:
            await off_loop(lambda: [self.blobs.put(b) for b in blobs], "blobs-put")
        context = [a.stored() for a in loaded or []] or None
        new, cid = cid is None, cid or new_id("c")

        def write() -> str:  # one trip to the store's thread, one transaction
            with self.store.transaction():
                if dangling is not None:
                    self.store.delete_message(dangling)
                if new:
                    self.store.create_conversation(
                        title=title_from(params.message),
                        model=turn.model,
                        provider=turn.provider.name,
                        system=params.system,
                        role=params.role,
                        cid=cid,
                    )
                if not stored:
                    self.store.add_message(cid, "user", params.message, context=context)
            return cid

        return cid, self.store.start(write)

    async def _compact(
        self,
        turn: Turn,
        cid: str,
        system_text: str | None,
        summary: dict[str, Any] | None,
        history: list[dict[str, Any]],
        new_msg: dict[str, Any],
        budget: int,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Fold the oldest turns into the stored summary once the conversation passes the
        threshold; on failure, leave them to trimming and say so."""
        rendered = [render(m) for m in history]
        system = summary_system(system_text, summary["content"] if summary else None)
        total = tokens.PER_REQUEST + sum(
            tokens.message_tokens(m) for m in [*([system] if system else []), *rendered, new_msg]
        )
        if not needs_compaction(total, budget, self.providers.config.compact_threshold):
            return summary, history
        n = split_point(rendered, budget)
        if n == 0:
            return summary, history
        try:
            text = await compaction.compact(
                self.providers,
                turn.provider,
                turn.model,
                turn.window,
                summary["content"] if summary else None,
                rendered[:n],
            )
        except (errors.RpcError, ContextExceeded, StreamBroken) as e:
            turn.warnings.append(f"compaction failed ({e}); the oldest turns were left out instead")
            return summary, history
        upto = history[n - 1]["seq"]
        await self.store.run(self.store.add_compaction, cid, upto, text)
        turn.compacted = n
        return {"upto_seq": upto, "content": text}, history[n:]

    async def _answer(
        self,
        params: ChatParams,
        ctx: RequestContext,
        turn: Turn,
        cid: str,
        fit: tokens.Fit,
        keeping: asyncio.Future[str],
    ) -> ChatResult:
        """Ask the provider while ``keeping`` (the question's write) runs; the answer is
        shown only once the question is stored, and stored after it (the store runs its
        writes in order). A failed write fails the request when the answer ends."""
        out = Completion()
        want_logprobs = bool(params.logprobs or params.top_logprobs)

        async def on_delta(text: str, lps: list[dict[str, Any]] | None) -> None:
            if not keeping.done():
                await asyncio.wait({keeping})
            if keeping.exception() is not None:
                return  # nothing is shown of an answer to a question that was not stored
            payload: dict[str, Any] = {"conversation_id": cid, "text": text}
            if lps is not None:
                payload["logprobs"] = lps
            # A lost connection makes the session cancel this request; the partial is stored then.
            with contextlib.suppress(ConnectionResetError):
                await ctx.notify("chat/delta", payload)

        trimmed = fit.trimmed
        try:
            try:
                await self._complete(turn, fit.messages, out, params, on_delta, want_logprobs)
            except ContextExceeded:
                # Our estimate was too low for this model: one tighter trim, then give up.
                smaller = tokens.fit(
                    fit.messages[0] if fit.messages[0]["role"] == "system" else None,
                    [m for m in fit.messages if m["role"] != "system"],
                    int(fit.prompt_tokens * 0.6),
                )
                trimmed += smaller.trimmed
                out = Completion()
                await self._complete(turn, smaller.messages, out, params, on_delta, want_logprobs)
        except ContextExceeded:
            raise errors.UpstreamError(
                f"{turn.model} refused the conversation as too long for its context window",
                provider=turn.provider.name,
                status=400,
                reason="context_length_exceeded",
            ) from None
        except tokens.TooLong as e:
            raise errors.InvalidParams(str(e), reason="too_long") from None
        except StreamBroken as broken:
            mid = await self._store_answer(cid, turn, out, "partial")
            broken.error.data.update(conversation_id=cid, message_id=mid, partial_text=out.text)
            raise broken.error from None
        except asyncio.CancelledError:
            mid = await to_the_end(self._store_answer(cid, turn, out, "partial", "cancelled"))
            if not answer_cancelled(ctx):
                raise
            return self._result(cid, mid, turn, out, "cancelled", trimmed, want_logprobs)
        await asyncio.wait({keeping})
        keeping.result()  # the question's write failed: so does the request
        mid = await self._store_answer(cid, turn, out, "complete")
        return self._result(
            cid, mid, turn, out, out.finish_reason or "stop", trimmed, want_logprobs
        )

    async def _complete(
        self,
        turn: Turn,
        messages: list[dict[str, Any]],
        out: Completion,
        params: ChatParams,
        on_delta: Any,
        want_logprobs: bool,
    ) -> None:
        wire = [{"role": m["role"], "content": m["content"]} for m in messages]
        top = (
            params.top_logprobs
            if params.top_logprobs is not None
            else (0 if want_logprobs else None)
        )
        await self.providers.complete(
            turn.provider,
            turn.model,
            wire,
            out,
            stream=params.stream,
            on_delta=on_delta if params.stream else None,
            temperature=params.temperature,
            max_tokens=params.max_tokens or self._answer_cap(turn),
            top_logprobs=top,
            response_format=_response_format(params.schema_),
        )

    @staticmethod
    def _answer_cap(turn: Turn) -> int | None:
        """The provider's own cap; local servers have none of their own, so they keep to
        the room reserved for the answer and a model that never stops cannot run on."""
        if turn.provider.max_tokens:
            return min(turn.provider.max_tokens, turn.reserve)
        return turn.reserve if turn.provider.local else None

    async def _store_answer(
        self, cid: str, turn: Turn, out: Completion, status: str, finish: str | None = None
    ) -> str:
        usage = out.usage or {}
        return await self.store_answer(
            cid,
            turn,
            out.text,
            status=status,
            finish=finish or out.finish_reason,
            usage=out.usage,
            tokens=usage.get("completion_tokens"),
            logprobs=out.logprobs or None,
            cost=self.ledger.cost(turn.provider, turn.model, out.usage),
        )

    async def store_answer(
        self,
        cid: str,
        turn: Turn,
        text: str,
        *,
        status: str,
        finish: str | None,
        usage: dict[str, Any] | None,
        tokens: int | None,
        logprobs: list[dict[str, Any]] | None = None,
        cost: float | None = None,
    ) -> str:
        """Store an answer (a chat's or a summary's) with its model, usage and status;
        ``tokens`` is what the answer itself counts when it is sent again as history."""
        u = usage or {}
        return await self.store.run(
            lambda: self.store.add_message(
                cid,
                "assistant",
                text,
                status=status,
                model=turn.model,
                provider=turn.provider.name,
                finish_reason=finish,
                prompt_tokens=u.get("prompt_tokens"),
                completion_tokens=u.get("completion_tokens"),
                cached_tokens=u.get("cached_tokens"),
                total_tokens=u.get("total_tokens"),
                tokens=tokens,
                logprobs=logprobs,
                cost=cost,
            )
        )

    def _result(
        self,
        cid: str,
        mid: str,
        turn: Turn,
        out: Completion,
        finish: str,
        trimmed: int,
        want_logprobs: bool,
    ) -> ChatResult:
        warnings = [*turn.warnings, *out.warnings]
        if want_logprobs and not out.got_logprobs and out.text and not out.logprobs_dropped:
            warnings.append(
                f"{turn.provider.name} ignored logprobs for {turn.model} (LM Studio does); "
                "logprobs is null"
            )
        return ChatResult(
            conversation_id=cid,
            message_id=mid,
            text=out.text,
            model=turn.model,
            provider=turn.provider.name,
            finish_reason=finish,
            usage=Usage(**out.usage) if out.usage else None,
            logprobs=[TokenLogprob(**lp) for lp in out.logprobs] if out.got_logprobs else None,
            trimmed=trimmed,
            compacted=turn.compacted,
            cost=self.ledger.cost(turn.provider, turn.model, out.usage),
            warnings=warnings,
        )


def _response_format(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    spec = {"name": "answer", "schema": schema, "strict": True}
    return {"type": "json_schema", "json_schema": spec}


def _check_schema(schema: dict[str, Any]) -> None:
    """-32602 ``bad_schema`` unless ``schema`` is a valid JSON Schema (``jsonschema`` is
    imported here, off the event loop)."""
    import jsonschema  # type: ignore[import-untyped,unused-ignore]

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise errors.InvalidParams(
            f"schema is not a valid JSON Schema: {e.message}", reason="bad_schema"
        ) from None


def _validate(schema: dict[str, Any], text: str) -> tuple[str | None, Any]:
    """(None, value) when ``text`` is JSON valid under ``schema``, else (why, None). A
    Markdown code fence around the JSON is allowed."""
    import jsonschema  # type: ignore[import-untyped,unused-ignore]

    body = text.strip()
    fence = re.fullmatch(r"```[a-zA-Z]*\n(.*?)\n?```", body, flags=re.S)
    if fence:
        body = fence.group(1)
    try:
        value = json.loads(body)
    except ValueError as e:
        return f"not JSON ({e})", None
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(value)
    )
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        return f"{where}: {error.message}", None
    return None, value
