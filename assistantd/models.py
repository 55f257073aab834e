"""The base of every pydantic model of the daemon (RPC params and results, the config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Model(BaseModel):
    """A model whose validator is built when it is first used, not when its module is
    imported: the daemon defines about 60 and a cold start's first answer uses a few, so
    building them all up front cost that answer 30-70 ms."""

    model_config = ConfigDict(defer_build=True)
