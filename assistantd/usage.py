"""Usage and cost: every provider request is written to a ledger (with its cost where
the price is known), and ``usage/report`` totals it by day, provider, model or
conversation, across every client of the daemon."""

from __future__ import annotations

import contextvars
from typing import Any, Literal

from pydantic import Field

from assistantd import pricing
from assistantd.config import Config
from assistantd.models import Model
from assistantd.providers import Provider
from assistantd.rpc import Params, RequestContext, Result
from assistantd.store import Store, now

# Set by chat and summarize around their provider calls, so each ledger row knows its
# conversation and purpose; child tasks (a summary's map step) inherit them.
conversation_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "conversation", default=None
)
kind_var: contextvars.ContextVar[str] = contextvars.ContextVar("kind", default="chat")


class Ledger:
    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    def cost(self, provider: Provider, model: str, usage: dict[str, int] | None) -> float | None:
        if not usage:
            return None
        return pricing.cost(pricing.price_for(model, self.config, provider.local), usage)

    def record(self, provider: Provider, model: str, usage: dict[str, int]) -> None:
        """Append one request's usage to the ledger (a queued write: no waiting)."""
        row = (
            now(),
            provider.name,
            model,
            conversation_var.get(),
            kind_var.get(),
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
            usage.get("cached_tokens", 0),
            usage.get("total_tokens", 0),
            self.cost(provider, model, usage),
        )

        def write() -> None:
            with self.store.db:
                self.store.db.execute(
                    "INSERT INTO usage_log(at, provider, model, conversation_id, kind,"
                    " prompt_tokens, completion_tokens, cached_tokens, total_tokens, cost)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    row,
                )

        self.store.submit(write)


GroupBy = Literal["day", "provider", "model", "conversation"]


class ReportParams(Params):
    since: str | None = Field(default=None, description="RFC 3339 time or date, inclusive")
    until: str | None = Field(default=None, description="RFC 3339 time or date, exclusive")
    group_by: GroupBy = "day"


class UsageRow(Model):
    key: str | None
    title: str | None = None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost: float | None  # USD for the requests whose price is known
    unpriced_requests: int  # requests of models with no known price: their cost is unknown


class ReportResult(Result):
    group_by: str
    since: str | None
    until: str | None
    prices_as_of: str
    rows: list[UsageRow]
    total: UsageRow


_KEYS = {
    "day": "substr(u.at, 1, 10)",
    "provider": "u.provider",
    "model": "u.model",
    "conversation": "u.conversation_id",
}


class Reports:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def report(self, p: ReportParams, ctx: RequestContext) -> ReportResult:
        """Tokens and cost of every provider request, totalled by day, provider, model or
        conversation."""
        rows, total = await self.store.run(self._query, p.group_by, p.since, p.until)
        return ReportResult(
            group_by=p.group_by,
            since=p.since,
            until=p.until,
            prices_as_of=pricing.PRICES_AS_OF,
            rows=rows,
            total=total,
        )

    def _query(
        self, group_by: str, since: str | None, until: str | None
    ) -> tuple[list[UsageRow], UsageRow]:
        where, args = ["1=1"], []
        if since:
            where.append("u.at >= ?")
            args.append(since)
        if until:
            where.append("u.at < ?")
            args.append(until)
        sums = (
            "COUNT(*), COALESCE(SUM(u.prompt_tokens),0), COALESCE(SUM(u.completion_tokens),0),"
            " COALESCE(SUM(u.cached_tokens),0), COALESCE(SUM(u.total_tokens),0), SUM(u.cost),"
            " SUM(CASE WHEN u.cost IS NULL THEN 1 ELSE 0 END)"
        )
        title = "(SELECT title FROM conversations c WHERE c.id = u.conversation_id)"
        cond = " AND ".join(where)
        db = self.store.db
        label = title if group_by == "conversation" else "NULL"
        found = db.execute(
            f"SELECT {_KEYS[group_by]} AS k, {label}, {sums}"
            f" FROM usage_log u WHERE {cond} GROUP BY k ORDER BY k",
            args,
        ).fetchall()
        rows = [_row(r[0], r[1], r[2:]) for r in found]
        total = _row(
            None, None, db.execute(f"SELECT {sums} FROM usage_log u WHERE {cond}", args).fetchone()
        )
        return rows, total


def _row(key: Any, title: Any, s: Any) -> UsageRow:
    return UsageRow(
        key=key,
        title=title,
        requests=s[0],
        prompt_tokens=s[1],
        completion_tokens=s[2],
        cached_tokens=s[3],
        total_tokens=s[4],
        cost=round(s[5], 8) if s[5] is not None else None,
        unpriced_requests=s[6] or 0,
    )
