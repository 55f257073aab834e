"""The protocol's error table as one exception hierarchy: each class is one row.

Handlers raise these; the dispatcher turns them into JSON-RPC error objects. Messages
and ``data`` must never hold a secret: ``keystore.scrub`` runs over both before sending.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RpcError(Exception):
    """A JSON-RPC error with the code of its row in the contract's table."""

    code: ClassVar[int] = -32603
    name: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, /, **data: Any) -> None:
        self.message = message or self.name
        self.data: dict[str, Any] = {k: v for k, v in data.items() if v is not None}
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data:
            err["data"] = self.data
        return err


class ParseError(RpcError):
    code, name = -32700, "parse error"


class InvalidRequest(RpcError):
    code, name = -32600, "invalid request"


class MethodNotFound(RpcError):
    code, name = -32601, "method not found"


class InvalidParams(RpcError):
    code, name = -32602, "invalid params"


class InternalError(RpcError):
    code, name = -32603, "internal error"


class RequestCancelled(RpcError):
    code, name = -32800, "request cancelled"


class NoApiKey(RpcError):
    code, name = -32001, "no API key"


class UpstreamError(RpcError):
    code, name = -32002, "upstream error"


class UpstreamUnreachable(RpcError):
    code, name = -32003, "upstream unreachable"


class NotFound(RpcError):
    code, name = -32004, "not found"


class Busy(RpcError):
    code, name = -32005, "busy"


class FetchFailed(RpcError):
    code, name = -32006, "fetch failed"


class LocalServerFailed(RpcError):
    code, name = -32007, "local server failed"


class RateLimited(RpcError):
    code, name = -32008, "rate limited"
