"""The ``providers/list`` and ``models/list`` methods: what each provider is and serves."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from assistantd import errors
from assistantd.local import LocalServers
from assistantd.models import Model
from assistantd.providers import Providers
from assistantd.rpc import NoParams, Params, RequestContext, Result

MODELS_TTL_S = 60.0


class ProviderInfo(Model):
    name: str
    base_url: str
    kind: str
    models: list[str]
    key_source: str
    key_env: str | None = None  # the env var read when the keyring has no key
    stream_options: bool = True  # false: not sent (no usage from a provider that needs it)
    logprobs: bool = True  # false: logprobs are not asked for, and a warning says so
    local: bool
    managed: bool
    state: str


class ProvidersResult(Result):
    providers: list[ProviderInfo]


class ModelsParams(Params):
    provider: str | None = None


class ModelInfo(Model):
    id: str
    provider: str


class ModelError(Model):
    provider: str
    code: int
    message: str


class ModelsResult(Result):
    models: list[ModelInfo]
    errors: list[ModelError] = []


class Catalog:
    """Providers with their state, and the models each serves (cached for a minute;
    ``forget`` drops the cache, e.g. when the config changes)."""

    def __init__(self, providers: Providers, local: LocalServers) -> None:
        self.providers = providers
        self.local = local
        self._models_cache: dict[str, tuple[float, list[ModelInfo]]] = {}

    def forget(self) -> None:
        self._models_cache.clear()

    async def providers_list(self, p: NoParams, ctx: RequestContext) -> ProvidersResult:
        """Every provider, its routing patterns, key source and state."""
        out = []
        for prov in self.providers.by_name.values():
            _, source = await self.providers.key(prov)
            out.append(
                ProviderInfo(
                    name=prov.name,
                    base_url=prov.base_url,
                    kind=prov.kind,
                    models=list(prov.models),
                    key_source=source,
                    key_env=prov.key_env,
                    stream_options=prov.stream_options,
                    logprobs=prov.logprobs,
                    local=prov.local,
                    managed=prov.managed,
                    state=self.provider_state(prov.name),
                )
            )
        return ProvidersResult(providers=out)

    def provider_state(self, name: str) -> str:
        prov = self.providers.by_name[name]
        if prov.managed:
            return self.local.state(name)
        return "local" if prov.local else "remote"

    async def models_list(self, p: ModelsParams, ctx: RequestContext) -> ModelsResult:
        """Models each provider serves (its GET /models), cached for a minute."""
        chosen = (
            [self.providers.get(p.provider)]
            if p.provider
            else list(self.providers.by_name.values())
        )
        models: list[ModelInfo] = []
        problems: list[ModelError] = []

        async def one(prov: Any) -> None:
            cached = self._models_cache.get(prov.name)
            if cached and time.monotonic() - cached[0] < MODELS_TTL_S:
                models.extend(cached[1])
                return
            if prov.managed:  # listing must not start a server: it serves its alias
                models.append(ModelInfo(id=self.local.servers[prov.name].model, provider=prov.name))
                return
            try:
                client = await self.providers.client(prov)
                async with asyncio.timeout(10):
                    page = await client.models.list()
                found = [ModelInfo(id=m.id, provider=prov.name) for m in page.data]
            except errors.RpcError as e:
                problems.append(ModelError(provider=prov.name, code=e.code, message=e.message))
                return
            except Exception as e:  # an unreachable or odd provider is listed, not fatal
                err = self.providers._map(prov, e)
                problems.append(ModelError(provider=prov.name, code=err.code, message=err.message))
                return
            self._models_cache[prov.name] = (time.monotonic(), found)
            models.extend(found)

        async with asyncio.TaskGroup() as tg:
            for prov in chosen:
                tg.create_task(one(prov))
        return ModelsResult(models=models, errors=problems)
