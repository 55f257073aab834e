"""assistantd: an LLM assistant daemon served over a JSON-RPC Unix socket.

Layout (one module per concern; see docs/design.md for the path of a request):

- ``paths``      where things live (stdlib only: the client imports it)
- ``client``     a small stdlib JSON-RPC client; ``cli`` is ``assistantctl`` on top of it
- ``framing``    newline-delimited JSON and LSP ``Content-Length`` framing
- ``rpc``        method registry and dispatch with pydantic params/results
- ``server``     the socket: peer-uid check, connections, single instance
- ``errors``     the protocol's error table as one exception hierarchy
- ``config``     the TOML config, validated; ``keystore`` the OS keyring
- ``store``      conversations in SQLite; ``tokens`` context windows and trimming
- ``providers``  OpenAI-compatible providers and routing; ``chat`` streamed chat
- ``summarize``  fetch, extract and map-reduce summaries; ``local`` local model servers
- ``daemon``     wires the parts together and runs the process

This file imports nothing, so ``assistantctl`` starts fast.
"""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__"]
