"""``chat/send``: a conversation turn, streamed, stored, trimmed to the context window.

The user's message is stored before the provider is called, and whatever text came
back is stored whatever happens next (finished, cancelled, broken off), so no turn
is ever lost. One send runs at a time per conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from assistantd import compaction, errors, tokens
from assistantd.compaction import needs_compaction, split_point, summary_system
from assistantd.providers import Completion, ContextExceeded, Provider, Providers, StreamBroken
from assistantd.roles import Roles
from assistantd.rpc import Params, RequestContext, Result
from assistantd.store import Store
from assistantd.usage import Ledger, conversation_var

log = logging.getLogger("assistantd.chat")

MAX_MESSAGE_CHARS = 4_000_000  # a bigger message is refused before anything is stored
VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VAR_CHARS = 4096


class Attachment(BaseModel):
    name: str
    text: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float


class TokenLogprob(BaseModel):
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


def render(message: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the provider sees it: attachments follow the text."""
    content = message["content"]
    context = message.get("context")
    if isinstance(context, str):
        import json

        context = json.loads(context)
    if context:
        parts = [f'<context name="{a["name"]}">\n{a["text"]}\n</context>' for a in context]
        content = content + "\n\n" + "\n\n".join(parts)
    return {"role": message["role"], "content": content, "tokens": message.get("tokens")}


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
        default_model: Any,
        roles: Roles,
    ) -> None:
        self.store = store
        self.providers = providers
        self.ledger = ledger
        self.default_model = default_model  # callable: () -> str, decided by the daemon
        self.roles = roles
        self.busy: set[str] = set()

    async def conversation(self, cid: str | None) -> dict[str, Any] | None:
        """The stored conversation ``cid`` (None for None); -32004 when there is none."""
        if not cid:
            return None
        conv = await self.store.run(self.store.conversation, cid)
        if conv is None:
            raise errors.NotFound("no such conversation", kind="conversation", id=cid)
        return conv

    def resolve(
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
        model = model or self.default_model()
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
        role_name = params.role or (conv["role"] if conv else None)
        cid: str | None = conv["id"] if conv else None
        if cid in self.busy:
            raise errors.Busy(
                "a chat/send is already running in this conversation", conversation_id=cid
            )
        if cid:
            self.busy.add(cid)  # before any await: two sends cannot both pass the check
        turn: Turn | None = None
        stored = False
        try:
            turn = self.resolve(params.model, params.provider, params.max_tokens, conv)
            await self.providers.client(turn.provider)  # fails early: no key, dead local server
            conversation_var.set(cid)
            history = await self.store.run(self.store.messages, cid) if cid else []
            dangling = history[-1] if history and history[-1]["role"] == "user" else None
            if dangling is not None:
                history = history[:-1]  # an unanswered question is replaced by this one
            summary = await self.store.run(self.store.latest_compaction, cid) if cid else None
            if summary:  # the stored summary stands in for the turns it covers
                history = [m for m in history if m["seq"] > summary["upto_seq"]]
            context = [a.model_dump() for a in params.context or []]
            new_msg = render({"role": "user", "content": params.message, "context": context})
            system_text = conv["system"] if conv and not params.role else params.system
            budget = turn.window - turn.reserve
            strategy = params.compact or self.providers.config.compact
            if strategy == "summarize" and cid and history:
                summary, history = await self._compact(
                    turn, cid, system_text, summary, history, new_msg, budget
                )
            system = summary_system(system_text, summary["content"] if summary else None)
            try:
                fit = tokens.fit(system, [render(m) for m in history] + [new_msg], budget)
            except tokens.TooLong as e:
                raise errors.InvalidParams(
                    f"the message does not fit {turn.model}'s context window of {turn.window} "
                    f"tokens ({e.needed} needed, {e.budget} available)",
                    reason="too_long",
                    tokens=e.needed,
                    budget=e.budget,
                ) from None

            if dangling is not None:
                await self.store.run(self.store.delete_message, dangling["id"])
            cid = await self._keep_question(params, turn, cid, stored=False)
            self.busy.add(cid)
            conversation_var.set(cid)
            stored = True
            result = await self._answer(params, ctx, turn, cid, fit)
            result.role = role_name
            return result
        except asyncio.CancelledError:
            # Cancelled before the provider was called (``_answer`` handles the rest): the
            # contract still answers with a cancelled result, and the question is kept.
            if not ctx.cancel_requested or ctx.session.lost or turn is None:
                raise
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            cid = await asyncio.shield(self._keep_question(params, turn, cid, stored))
            self.busy.add(cid)
            mid = await self._store_answer(cid, turn, Completion(), "partial", "cancelled")
            result = self._result(cid, mid, turn, Completion(), "cancelled", 0, False)
            result.role = role_name
            return result
        finally:
            if cid:
                self.busy.discard(cid)

    async def _keep_question(
        self, params: ChatParams, turn: Turn, cid: str | None, stored: bool
    ) -> str:
        """Store the user's message (in a new conversation when there is none yet)."""
        if cid is None:
            cid = await self.store.run(
                lambda: self.store.create_conversation(
                    title=title_from(params.message),
                    model=turn.model,
                    provider=turn.provider.name,
                    system=params.system,
                    role=params.role,
                )
            )
        if not stored:
            context = [a.model_dump() for a in params.context or []] or None
            await self.store.run(
                lambda: self.store.add_message(cid, "user", params.message, context=context)
            )
        return cid

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
        self, params: ChatParams, ctx: RequestContext, turn: Turn, cid: str, fit: tokens.Fit
    ) -> ChatResult:
        out = Completion()
        want_logprobs = bool(params.logprobs or params.top_logprobs)

        async def on_delta(text: str, lps: list[dict[str, Any]] | None) -> None:
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
            task = asyncio.current_task()
            mid = await asyncio.shield(self._store_answer(cid, turn, out, "partial", "cancelled"))
            if not ctx.cancel_requested or ctx.session.lost:
                raise
            if task is not None:
                task.uncancel()
            return self._result(cid, mid, turn, out, "cancelled", trimmed, want_logprobs)
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
        cost = self.ledger.cost(turn.provider, turn.model, out.usage)
        return await self.store.run(
            lambda: self.store.add_message(
                cid,
                "assistant",
                out.text,
                status=status,
                model=turn.model,
                provider=turn.provider.name,
                finish_reason=finish or out.finish_reason,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                cached_tokens=usage.get("cached_tokens"),
                total_tokens=usage.get("total_tokens"),
                tokens=usage.get("completion_tokens"),
                logprobs=out.logprobs or None,
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
        warnings = list(turn.warnings)
        if want_logprobs and not out.got_logprobs and out.text:
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
