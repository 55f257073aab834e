"""The ``keys/*`` methods: set, delete and list providers' API keys (kept by keystore)."""

from __future__ import annotations

from pydantic import Field

from assistantd import errors, keystore
from assistantd.local import LocalServers
from assistantd.models import Model
from assistantd.providers import Providers
from assistantd.rpc import NoParams, Params, RequestContext, Result


class KeySetParams(Params):
    provider: str
    key: str = Field(min_length=1, max_length=4096)


class KeySetResult(Result):
    provider: str
    source: str


class ProviderParam(Params):
    provider: str


class KeyDeleteResult(Result):
    provider: str
    deleted: bool


class KeyInfo(Model):
    provider: str
    source: str
    env_var: str | None
    hint: str


class KeyListResult(Result):
    keys: list[KeyInfo]
    keyring_error: str | None = None


class Keys:
    """Keys in the OS keyring; a change is told to the providers (their cached keys) and
    to the local servers (the no-key default may switch)."""

    def __init__(self, providers: Providers, local: LocalServers) -> None:
        self.providers = providers
        self.local = local

    async def set(self, p: KeySetParams, ctx: RequestContext) -> KeySetResult:
        """Store a provider's API key in the OS keyring."""
        self.providers.get(p.provider)
        key = p.key.strip()
        if not keystore.sendable(key):
            raise errors.InvalidParams(
                "a key is printable ASCII, without spaces, newlines or control characters",
                reason="bad_key",
            )
        try:
            await keystore.set_key(p.provider, key)
        except keystore.KeyringUnavailable as e:
            raise errors.NoApiKey(
                f"cannot store the key: {e}", provider=p.provider, reason="keyring_unavailable"
            ) from None
        self.providers.forget_keys(p.provider)
        await self.local.refresh_keys()  # the no-key default may switch now
        return KeySetResult(provider=p.provider, source="keyring")

    async def delete(self, p: ProviderParam, ctx: RequestContext) -> KeyDeleteResult:
        """Remove a provider's key from the OS keyring."""
        try:
            deleted = await keystore.delete_key(p.provider)
        except keystore.KeyringUnavailable as e:
            raise errors.NoApiKey(
                f"cannot delete the key: {e}", provider=p.provider, reason="keyring_unavailable"
            ) from None
        self.providers.forget_keys(p.provider)
        await self.local.refresh_keys()
        return KeyDeleteResult(provider=p.provider, deleted=deleted)

    async def list(self, p: NoParams, ctx: RequestContext) -> KeyListResult:
        """Where each provider's key comes from (keyring, env or none), with a short hint."""
        out = []
        for prov in self.providers.by_name.values():
            if not prov.needs_key and not prov.key_env:
                continue
            self.providers.forget_keys(prov.name)
            key, source = await self.providers.key(prov)
            out.append(
                KeyInfo(
                    provider=prov.name,
                    source=source,
                    env_var=prov.key_env,
                    hint=keystore.hint(key) if key else "",
                )
            )
        return KeyListResult(keys=out, keyring_error=self.providers.keyring_error)
