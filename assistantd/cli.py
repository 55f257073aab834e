"""``assistantctl``: the command-line client. Standard library only on its way to the
socket, so it starts in tens of milliseconds: a plain chat line (``chat WORDS...``, no
option) is read without argparse and sent with the C halves of json and socket
(``client``); what other lines and commands need (argparse, ``json``, ``subprocess``,
``math``, ``readline``) is imported where it is used.

On a terminal, what the daemon sends (answers, page text, titles, stored messages,
errors) is printed with its control characters replaced (``--raw``: the exact text)."""

# ruff: noqa: PTH110  (os.path, not pathlib: pathlib would cost this client 15 ms)
from __future__ import annotations

import os
import sys

from assistantd.client import Client, DaemonUnavailable, RpcError, start_daemon

TYPE_CHECKING = False  # typing costs an import that the socket path does without
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from typing import Any, TextIO

EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 1, 2, 3, 130
NO_KEY = -32001
LOCAL_EXTRA = "pip install 'assistantd[local]'"

# C0 and C1 control characters and DEL, but newline and tab: a terminal obeys them
# (ESC ] 52 writes the clipboard, ESC ] 0 retitles the window, CSI 8 m hides text).
_CONTROLS = {c: "\ufffd" for c in (*range(0x20), *range(0x7F, 0xA0)) if c not in (0x09, 0x0A)}
# json.dumps escapes C0 but leaves DEL and C1 raw; \u escapes keep the JSON exact.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}


def safe(text: str) -> str:
    """``text`` with every control character but newline and tab shown as U+FFFD."""
    return text.replace("\r\n", "\n").translate(_CONTROLS)


class SafeStream:
    """A terminal stream that passes text through ``safe``; the rest goes to the stream."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(safe(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def guard_terminals() -> None:
    """Wrap stdout and stderr in ``SafeStream`` where they are terminals."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and stream.isatty():
            setattr(sys, name, SafeStream(stream))


def utf8(text: str) -> str:
    """``text`` with what was not UTF-8 (bytes argv or stdin could not decode, kept as
    lone surrogates) shown as U+FFFD: the wire is UTF-8 JSON, which cannot carry them."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is not an undecodable byte
        return text.encode("utf-8", "replace").decode("utf-8")


def read_stdin() -> str:
    """All of stdin as text, undecodable bytes as U+FFFD (``utf8``)."""
    sys.stdin.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
    return utf8(sys.stdin.read())


def status_line(text: str) -> None:
    """Overwrite the current stderr line with ``text`` (its own control sequence kept)."""
    stream = sys.stderr.stream if isinstance(sys.stderr, SafeStream) else sys.stderr
    stream.write("\r\033[K" + safe(text))
    stream.flush()


def dump_json(value: Any) -> None:
    import json

    print(json.dumps(value, ensure_ascii=False, indent=2).translate(_JSON_ESCAPES))


class Ctl:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            forbid = self.args.no_autostart or "ASSISTANTD_NO_AUTOSTART" in os.environ
            self._client = Client(self.args.socket, autostart=not forbid)
            self._client.connect()
        return self._client

    def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.call(
            method, {k: v for k, v in (params or {}).items() if v is not None}, **kw
        )

    def out(self, value: Any, human: Callable[[Any], None]) -> None:
        if self.args.json:
            dump_json(value)
        else:
            human(value)


# -- chat -----------------------------------------------------------------------------


def _print_logprobs(entries: list[dict[str, Any]]) -> None:
    """Each token with its probability and alternatives, as in the seed article."""
    import math

    for e in entries:
        print(repr(e["token"]))
        for t in e.get("top_logprobs") or [{"token": e["token"], "logprob": e["logprob"]}]:
            print(f"  {math.exp(t['logprob']):7.5f} {t['token']!r}")


def chat_once(
    ctl: Ctl,
    message: str,
    conversation_id: str | None,
    context: list[dict[str, str]],
    first: bool = True,
) -> dict[str, Any] | None:
    a = ctl.args
    streaming = not a.no_stream and not a.json and a.schema is None
    params = {
        "message": message,
        "conversation_id": conversation_id,
        "model": a.model,
        "provider": a.provider,
        "system": a.system if first else None,
        "role": a.role if first else None,
        "temperature": a.temperature,
        "max_tokens": a.max_tokens,
        "context": context or None,
        "stream": not a.no_stream,
        "top_logprobs": a.logprobs,
        "schema": a.schema,
    }

    progress = Progress(tty=sys.stderr.isatty() and not a.json)

    def on_notify(method: str, p: dict[str, Any]) -> None:
        if method == "chat/progress":
            progress.stage(p)
        elif method == "chat/delta" and streaming:
            progress.clear()
            sys.stdout.write(p.get("text", ""))
            sys.stdout.flush()

    try:
        result = ctl.call("chat/send", params, on_notify=on_notify, cancel_on_interrupt=True)
    finally:
        progress.clear()
    if a.json:
        dump_json(result)
        return dict(result)
    if a.schema is not None and result["finish_reason"] != "cancelled":
        import json

        print(json.dumps(result["json"], ensure_ascii=False))  # one line, for jq
        return dict(result)
    if not streaming:
        sys.stdout.write(result["text"])
    if result["finish_reason"] == "cancelled":
        sys.stdout.write(" [cancelled]")
    sys.stdout.write("\n")
    for w in result.get("warnings") or []:
        print(f"assistantctl: warning: {w}", file=sys.stderr)
    if a.logprobs is not None and result.get("logprobs"):
        _print_logprobs(result["logprobs"])
    if a.verbose and result.get("usage"):
        u = result["usage"]
        print(
            f"[{result['model']} via {result['provider']}: {u['prompt_tokens']} prompt + "
            f"{u['completion_tokens']} completion tokens; trimmed {result['trimmed']}]",
            file=sys.stderr,
        )
    return dict(result)


class Progress:
    """One transient line on a terminal's stderr while the daemon prepares an answer
    (``chat/progress``: a local model server starting); cleared when text arrives."""

    MESSAGES = {"starting_local": "starting the local model{name}…"}

    def __init__(self, tty: bool) -> None:
        self.tty, self.shown = tty, False

    def stage(self, p: dict[str, Any]) -> None:
        template = self.MESSAGES.get(str(p.get("stage")))
        if self.tty and template is not None:  # a stage this client does not know: none
            name = p.get("name")
            status_line(template.format(name=f" {name}" if name else ""))
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            status_line("")
            self.shown = False


def cmd_chat(ctl: Ctl) -> int:
    a = ctl.args
    message = utf8(" ".join(a.message).strip())
    if a.conversation and any(c.isspace() for c in a.conversation):
        # `chat -c "follow up"`, as `llm -c` continues the latest: it took the question
        # for an ID and then said no message was given.
        print(
            f"assistantctl: -c takes a conversation ID (assistantctl conv list), not "
            f"{a.conversation!r}; to continue the latest: assistantctl chat --continue "
            f"{a.conversation!r}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        context = attachments(a.attach or [], a.type)
        a.schema = load_schema(a.schema)
    except ValueError as e:
        print(f"assistantctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    if "-" not in (a.attach or []) and not sys.stdin.isatty():
        piped = read_stdin()
        if message and piped.strip():
            context.append({"name": "stdin", "text": piped})
        elif piped.strip():
            message = piped.strip()
    cid = a.conversation
    if a.cont and not cid:
        latest = ctl.call("conversations/list", {"limit": 1})["conversations"]
        cid = latest[0]["id"] if latest else None
    if message:
        result = chat_once(ctl, message, cid, context)
        return 0 if result else EXIT_ERROR
    if not sys.stdin.isatty():
        print("assistantctl: no message given (as an argument or on stdin)", file=sys.stderr)
        return EXIT_USAGE
    return repl(ctl, cid)


MAX_INLINE = 12 * 1024 * 1024  # base64 of it fits the protocol's 16 MiB line


def attachments(specs: list[str], mime: str | None) -> list[dict[str, str]]:
    """``-a`` items: a file by its absolute path (the daemon reads it); ``-`` is stdin,
    sent inline (base64), typed by ``--type`` or by the daemon's sniffing."""
    out: list[dict[str, str]] = []
    for spec in specs:
        if spec != "-":
            out.append({"path": os.path.abspath(os.path.expanduser(spec))})  # noqa: PTH100, PTH111
            continue
        import base64  # only here: the chat path without `-a -` stays without it

        data = sys.stdin.buffer.read(MAX_INLINE + 1)
        if len(data) > MAX_INLINE:
            raise ValueError("-a -: stdin is too large to send inline; attach it as a file")
        item = {"name": "stdin", "data": base64.b64encode(data).decode("ascii")}
        out.append({**item, "type": mime} if mime else item)
    return out


def load_schema(spec: str | None) -> Any:
    """``--schema``: inline JSON, or a file holding it."""
    if spec is None:
        return None
    import json

    try:
        if spec.lstrip().startswith("{"):
            return json.loads(spec)
        with open(spec, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"--schema: cannot read {spec}: {e.strerror}") from None
    except ValueError as e:
        raise ValueError(f"--schema: not JSON: {e}") from None


def repl(ctl: Ctl, cid: str | None) -> int:
    """An interactive chat: Ctrl-C cancels the answer, not the session; /quit leaves."""
    import contextlib

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    print("assistantctl chat: /quit or Ctrl-D to leave, Ctrl-C cancels an answer", file=sys.stderr)
    first = cid is None
    while True:
        try:
            line = utf8(input("> ")).strip()
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            continue
        if line in ("/quit", "/exit", "quit", "exit"):
            return 0
        if not line:
            continue
        try:
            result = chat_once(ctl, line, cid, [], first)
        except KeyboardInterrupt:
            print("\n[interrupted]", file=sys.stderr)
            continue
        except RpcError as e:
            explain(ctl, e)
            cid = (e.data or {}).get("conversation_id", cid) if isinstance(e.data, dict) else cid
            continue
        if result:
            cid, first = result["conversation_id"], False


# -- summarize ------------------------------------------------------------------------


def cmd_summarize(ctl: Ctl) -> int:
    """Summarize a URL, or stdin for ``-``; the summary streams to stdout, and a progress
    line ("map 3/12") goes to stderr while that is a terminal."""
    a = ctl.args
    params: dict[str, Any] = {
        "model": a.model,
        "provider": a.provider,
        "instructions": a.instructions,
        "stream": not a.json,
    }
    if a.source == "-":
        params["text"] = read_stdin()
        if not params["text"].strip():
            print("assistantctl: nothing to summarize on stdin", file=sys.stderr)
            return EXIT_USAGE
        method = "summarize/text"
    else:
        method, params["url"] = "summarize/url", a.source
    tty = sys.stderr.isatty() and not a.json
    state = {"line": False, "streamed": False}

    def clear() -> None:
        if state["line"]:
            status_line("")
            state["line"] = False

    def on_notify(name: str, p: dict[str, Any]) -> None:
        if name == "summarize/progress" and tty and not state["streamed"]:
            status_line(f"{p.get('stage')} {p.get('done')}/{p.get('total')}")
            state["line"] = True
        elif name == "chat/delta" and not a.json:
            clear()
            state["streamed"] = True
            sys.stdout.write(p.get("text", ""))
            sys.stdout.flush()

    try:
        result = ctl.call(method, params, on_notify=on_notify, cancel_on_interrupt=True)
    finally:
        clear()
    if a.json:
        dump_json(result)
        return 0
    if not state["streamed"]:
        sys.stdout.write(result["text"])
    if result.get("finish_reason") == "cancelled":
        sys.stdout.write(" [cancelled]")
    sys.stdout.write("\n")
    sys.stdout.flush()
    if tty and result.get("conversation_id"):
        cid = result["conversation_id"]
        print(
            f"[{result['chunks']} part(s); follow up: assistantctl chat -c {cid}]", file=sys.stderr
        )
    return 0


# -- the rest -------------------------------------------------------------------------


def _table(rows: list[list[str]], head: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
    for row in [head, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip())


def cmd_daemon(ctl: Ctl) -> int:
    a = ctl.args
    if a.action == "status":

        def show(s: dict[str, Any]) -> None:
            state = "ok" if s["config_ok"] else f"ERROR: {s['config_error']}"
            print(f"assistantd {s['version']} (pid {s['pid']}) up {s['uptime_s']:.0f} s")
            print(f"socket: {s['socket']}\nconfig: {s['config_path']} ({state})")
            print(f"default model: {s['default_model']}; in flight: {s['active_requests']}")
            print(f"proxy: {proxy_line(s)}")

        ctl.out(ctl.call("daemon/status"), show)
        return 0
    if a.action == "install":
        from assistantd.install import install

        return install(a)
    path = Client(a.socket).path
    report: dict[str, Any] = {"action": a.action, "socket": path}
    if a.action in ("stop", "restart"):
        try:
            Client(a.socket).call("daemon/shutdown")
            report["stopped"] = True
        except DaemonUnavailable:
            report["stopped"] = False
            if a.action == "stop" and not a.json:
                print("assistantd is not running", file=sys.stderr)
        if report["stopped"]:
            _wait_gone(path)
    if a.action in ("start", "restart"):
        c = Client(a.socket)
        try:
            c.connect()
            report["started"] = False
            if not a.json:
                print(f"assistantd is already running on {path}", file=sys.stderr)
        except DaemonUnavailable:
            start_daemon(path)
            report["started"] = True
            if not a.json:
                print(f"assistantd started on {path}", file=sys.stderr)
        finally:
            c.close()
        report["pid"] = Client(a.socket).call("daemon/status")["pid"]
    if a.json:
        dump_json(report)
    return 0


def _wait_gone(path: str) -> None:
    import time

    deadline = time.monotonic() + 10
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def cmd_keys(ctl: Ctl) -> int:
    a = ctl.args
    if a.action == "set":
        ctl.client.connect()  # first: whose socket it is, before a key is even asked for
        if sys.stdin.isatty():
            import getpass

            key = getpass.getpass(f"API key for {a.provider} (not echoed): ")
        else:
            key = sys.stdin.readline()
        r = ctl.call("keys/set", {"provider": a.provider, "key": key.strip()})
        ctl.out(r, lambda r: print(f"stored the key for {r['provider']} in the OS keyring"))
    elif a.action == "delete":
        r = ctl.call("keys/delete", {"provider": a.provider})
        ctl.out(
            r, lambda r: print(f"{r['provider']}: {'deleted' if r['deleted'] else 'no key stored'}")
        )
    else:
        r = ctl.call("keys/list")

        def show(r: dict[str, Any]) -> None:
            _table(
                [
                    [
                        k["provider"],
                        k["source"],
                        k["env_var"] or "",
                        ("…" + k["hint"]) if k["hint"] else "",
                    ]
                    for k in r["keys"]
                ],
                ["PROVIDER", "SOURCE", "ENV", "HINT"],
            )
            if r.get("keyring_error"):
                print(f"note: {r['keyring_error']}", file=sys.stderr)

        ctl.out(r, show)
    return 0


def cmd_providers(ctl: Ctl) -> int:
    r = ctl.call("providers/list")
    ctl.out(
        r,
        lambda r: _table(
            [
                [
                    p["name"],
                    p["kind"],
                    p["base_url"],
                    ",".join(p["models"]),
                    p["key_source"],
                    p.get("key_env") or "",
                    p["state"],
                ]
                for p in r["providers"]
            ],
            ["NAME", "KIND", "BASE URL", "MODELS", "KEY", "ENV", "STATE"],
        ),
    )
    return 0


def cmd_models(ctl: Ctl) -> int:
    r = ctl.call("models/list", {"provider": ctl.args.provider})

    def show(r: dict[str, Any]) -> None:
        _table([[m["provider"], m["id"]] for m in r["models"]], ["PROVIDER", "MODEL"])
        for e in r.get("errors") or []:
            print(f"{e['provider']}: {e['message']}", file=sys.stderr)

    ctl.out(r, show)
    return 0


def _total(r: dict[str, Any]) -> str:
    """A list's total as the daemon counts it: exact, or a lower bound ("1000+") when a
    search matches more than the daemon counts (``total_exact`` false)."""
    return f"{r['total']}+" if r.get("total_exact") is False else str(r["total"])


def cmd_conversations(ctl: Ctl) -> int:
    a = ctl.args
    act = a.action
    if act in ("list", "search"):
        params = {"limit": a.limit, "query": a.query, "before": a.before}
        r = ctl.call("conversations/list", params)

        def show(r: dict[str, Any]) -> None:
            rows = [
                [
                    c["id"],
                    c["updated_at"][:16].replace("T", " "),
                    str(c["message_count"]),
                    c["model"] or "",
                    c["title"],
                ]
                for c in r["conversations"]
            ]
            _table(rows, ["ID", "UPDATED", "MSGS", "MODEL", "TITLE"])
            if r.get("next"):
                more = f"the next page: --before {r['next']}"
            elif not a.before and len(rows) < r["total"]:  # a search: it has no cursor
                more = "--limit N for more"
            else:
                return
            if sys.stderr.isatty():
                print(f"({len(rows)} shown, {_total(r)} in all; {more})", file=sys.stderr)

        ctl.out(r, show)
    elif act == "show":
        if a.json:
            dump_json(ctl.call("conversations/get", {"id": a.id}))
        else:
            print(ctl.call("conversations/export", {"id": a.id, "format": "markdown"})["content"])
    elif act == "export":
        r = ctl.call("conversations/export", {"id": a.id, "format": a.format})
        ctl.out(r, lambda r: print(r["content"]))
    elif act == "rm":
        r = ctl.call("conversations/delete", {"id": a.id})
        ctl.out(r, lambda r: print(f"deleted {r['id']}"))
    elif act == "rename":
        r = ctl.call("conversations/rename", {"id": a.id, "title": a.title})
        ctl.out(r, lambda r: print(f"{r['id']}: {r['title']}"))
    elif act == "fork":
        r = ctl.call("conversations/fork", {"id": a.id, "message_id": a.message})
        ctl.out(r, lambda r: print(r["id"]))
    return 0


def conversation_words(args: argparse.Namespace) -> str | None:
    """Spread ``conversations ACTION WORDS...`` over the action's arguments: ``search``
    takes all the words as its query, ``rename ID TITLE...`` a title of many words; the
    rest take one ID. Returns a usage error, or None."""
    words, act = args.words, args.action
    args.id = args.query = args.title = None
    if act == "search":
        args.query = " ".join(words).strip() or None
        return None if args.query else "conversations search needs the words to look for"
    if act == "list":
        return "conversations list takes no words (search WORDS... looks)" if words else None
    if args.before:
        return f"--before pages conversations list, not {act}"
    if not words:
        return f"conversations {act} needs a conversation ID"
    args.id, rest = words[0], words[1:]
    if act == "rename":
        args.title = " ".join(rest).strip() or None
        return None if args.title else "conversations rename needs an ID and a title"
    return f"conversations {act} takes one ID, not {len(words)} words" if rest else None


def cmd_local(ctl: Ctl) -> int:
    a = ctl.args
    if a.action == "list":
        r = ctl.call("local/list")
        ctl.out(
            r,
            lambda r: _table(
                [
                    [
                        x["name"],
                        x["kind"],
                        "managed" if x["managed"] else "probed",
                        x["state"],
                        x["model"] or "",
                        x["base_url"],
                        x.get("error") or "",
                    ]
                    for x in r["servers"]
                ],
                ["NAME", "KIND", "HOW", "STATE", "MODEL", "BASE URL", "NOTE"],
            ),
        )
        return 0
    if not a.name:
        print(f"assistantctl: local {a.action} needs a NAME", file=sys.stderr)
        return EXIT_USAGE
    if a.action == "logs":
        r = ctl.call("local/logs", {"name": a.name, "lines": a.lines})
        ctl.out(r, lambda r: print("\n".join(r["lines"])))
        return 0
    try:
        r = ctl.call(f"local/{a.action}", {"name": a.name})
    except RpcError as e:
        _report(e)
        if isinstance(e.data, dict) and e.data.get("log_tail"):
            print(f"--- the end of its log:\n{e.data['log_tail']}", file=sys.stderr)
        return EXIT_ERROR
    ctl.out(
        r,
        lambda r: print(
            f"{r['name']}: {r['state']}" + (f" at {r['base_url']}" if r["base_url"] else "")
        ),
    )
    return 0


def cmd_usage(ctl: Ctl) -> int:
    a = ctl.args
    r = ctl.call("usage/report", {"since": a.since, "until": a.until, "group_by": a.group_by})

    def money(row: dict[str, Any]) -> str:
        if row["cost"] is None:
            return "unknown"
        cost = row["cost"]
        # Cents for everyday sums; small ones keep three significant digits, not "$0.0000".
        text = f"${cost:.2f}" if cost >= 0.01 or cost == 0 else f"${cost:.3g}"
        return text + (
            f" (+{row['unpriced_requests']} unpriced)" if row["unpriced_requests"] else ""
        )

    def show(r: dict[str, Any]) -> None:
        rows = [
            [
                (x["title"] or x["key"]) if a.group_by == "conversation" else str(x["key"]),
                str(x["requests"]),
                str(x["prompt_tokens"]),
                str(x["completion_tokens"]),
                str(x["cached_tokens"]),
                money(x),
            ]
            for x in r["rows"]
        ]
        t = r["total"]
        rows.append(
            [
                "TOTAL",
                str(t["requests"]),
                str(t["prompt_tokens"]),
                str(t["completion_tokens"]),
                str(t["cached_tokens"]),
                money(t),
            ]
        )
        _table(rows, [a.group_by.upper(), "REQUESTS", "PROMPT", "COMPLETION", "CACHED", "COST"])
        print(f"(prices as of {r['prices_as_of']}; override them in the config)", file=sys.stderr)

    ctl.out(r, show)
    return 0


def cmd_roles(ctl: Ctl) -> int:
    r = ctl.call("roles/list")
    ctl.out(
        r,
        lambda r: _table(
            [
                [x["name"], x["source"], x.get("model") or "", x.get("description") or ""]
                for x in r["roles"]
            ],
            ["NAME", "SOURCE", "MODEL", "DESCRIPTION"],
        ),
    )
    return 0


DEFAULT_WHY = {
    "config": "default_model in the config",
    "local": "the local model: no remote provider has a key",
    "fallback": "the built-in fallback: no default_model in the config, no local model",
}


def cmd_doctor(ctl: Ctl) -> int:
    """Everything a first run depends on, at a glance."""
    path = Client(ctl.args.socket).path
    try:
        status = ctl.call("daemon/status")
    except DaemonUnavailable as e:
        if ctl.args.json:
            dump_json({"socket": path, "error": str(e)})
        else:
            print(f"socket:   {path}: {e}")
        return EXIT_UNAVAILABLE
    keys = ctl.call("keys/list")
    local = ctl.call("local/list")
    report = {
        "status": status,
        "config_exists": os.path.exists(status["config_path"]),
        "keys": keys["keys"],
        "keyring_error": keys.get("keyring_error") or status.get("keyring_error"),
        "local": local["servers"],
    }
    if ctl.args.json:
        dump_json(report)
        return 0
    s = status
    if not s["config_ok"]:
        config = f"ERROR: {s['config_error']}"
    else:
        config = "ok" if report["config_exists"] else "no file: the defaults apply"
    with_key = [
        f"{k['provider']} ({k['source']}" + (f" …{k['hint']})" if k["hint"] else ")")
        for k in keys["keys"]
        if k["source"] != "none"
    ]
    without = [k["provider"] for k in keys["keys"] if k["source"] == "none"]
    servers = [
        f"{x['name']} {x['state']} ({'managed' if x['managed'] else 'probed'})"
        for x in local["servers"]
    ]
    source = s.get("default_model_source")
    why = DEFAULT_WHY.get(source or "", source or "?")
    print(f"assistantd {s['version']} (pid {s['pid']}), up {s['uptime_s']:.0f} s")
    print(f"socket:   {s['socket']} (answering)")
    print(f"config:   {s['config_path']} ({config})")
    print(f"keyring:  {report['keyring_error'] or 'ok'}")
    print(f"keys:     {', '.join(with_key) or 'none'}")
    if without:
        print(f"no key:   {', '.join(without)} (assistantctl keys set NAME)")
    print(f"local:    {', '.join(servers) or 'none'}")
    if not any(x["managed"] for x in local["servers"]):
        print(f"          (no managed local model; for one: {LOCAL_EXTRA})")
    print(f"default:  {s['default_model']} ({why})")
    if "sdk" in s:  # a daemon from before issue 13 does not say
        sdk = s["sdk"].replace("_", " ")
        print(f"sdk:      openai SDK {sdk}; answers stream via {s['streaming_via']}")
    print(f"proxy:    {proxy_line(s)}")
    return 0


def proxy_line(s: dict[str, Any]) -> str:
    """The proxy in use, from daemon/status (its password is never in it)."""
    if not s.get("proxy"):
        line = "none (direct)"
    else:
        config = s.get("proxy_source") == "config"
        line = f"{s['proxy']} (from {'the config' if config else 'the daemon environment'})"
        if s.get("no_proxy"):
            line += f"; not for {', '.join(s['no_proxy'])}"
    if s.get("ca_bundle"):
        line += f"; also trusting {s['ca_bundle']}"
    return line


def _report(e: RpcError) -> None:
    print(f"assistantctl: {e.message} ({e.code})", file=sys.stderr)


def explain(ctl: Ctl, e: RpcError) -> None:
    """An error as one line on stderr; a missing key as what to do about it."""
    if e.code == NO_KEY and not (isinstance(e.data, dict) and e.data.get("reason")):
        _guide_no_key(ctl, e)
    else:
        _report(e)


def _guide_no_key(ctl: Ctl, e: RpcError) -> None:
    """-32001, said as what to do next: store a key, or answer with a local model."""
    data = e.data if isinstance(e.data, dict) else {}
    provider = data.get("provider") or "openai"
    print(
        f"assistantctl: {provider} needs an API key: assistantctl keys set {provider}",
        file=sys.stderr,
    )
    try:
        managed = [x["name"] for x in ctl.call("local/list")["servers"] if x["managed"]]
    except (RpcError, DaemonUnavailable):
        managed = []
    if managed:
        hint = f"or use the local model, no key needed: assistantctl chat -p {managed[0]} ..."
    else:
        hint = f"or run a model on this machine, no key needed: {LOCAL_EXTRA}"
    print(f"  {hint}", file=sys.stderr)


if TYPE_CHECKING:
    from argparse import Namespace
else:

    class Namespace:
        """argparse's Namespace, for a plain chat line read without argparse."""

        def __init__(self, **values):
            self.__dict__.update(values)


def quick_chat(argv: list[str]) -> Namespace | None:
    """``chat WORDS...`` with no option (no word starting with ``-``): the namespace
    argparse gives for it, made without importing argparse and ``re`` (a fifth of what
    the commonest line cost this client before the daemon answered). None for any other
    line: argparse reads it."""
    if argv[:1] != ["chat"] or len(argv) < 2 or any(w.startswith("-") for w in argv):
        return None
    return Namespace(
        **{"socket": None, "no_autostart": False, "command": "chat", "func": cmd_chat},
        **dict.fromkeys(("model", "provider", "system", "role", "temperature"), None),
        **dict.fromkeys(("conversation", "logprobs", "max_tokens", "attach", "type"), None),
        **{"schema": None, "cont": False, "no_stream": False, "verbose": False},
        message=argv[1:],
    )


def command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, read past the top-level options spelled out in full;
    None when unsure (an abbreviated option, say): then every subcommand is built."""
    args = iter(argv)
    for arg in args:
        if arg == "--socket":
            next(args, None)
        elif arg.startswith("--socket=") or arg in ("--no-autostart", "--json", "--raw"):
            continue
        else:
            return None if arg.startswith("-") else arg
    return None


def parser(chat_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; with ``chat_only``, the top level and ``chat`` alone (the
    same parse for a chat line, without building the other subcommands: 3 ms of a
    first answer that takes 35)."""
    import argparse

    from assistantd.cliformat import Parser

    common = Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON"
    )
    common.add_argument(
        "--raw",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print control characters as they are, even on a terminal",
    )
    p = Parser(prog="assistantctl", parents=[common], description="Talk to the assistantd daemon.")
    p.add_argument("--socket", help="socket path (default: the contract's rule)")
    p.add_argument(
        "--no-autostart",
        action="store_true",
        help="do not start the daemon (also: ASSISTANTD_NO_AUTOSTART=1)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("chat", parents=[common], help="ask a question (REPL when none is given)")
    c.add_argument("message", nargs="*")
    c.add_argument("-m", "--model")
    c.add_argument("-p", "--provider")
    c.add_argument("-s", "--system")
    c.add_argument("-r", "--role", help="a named prompt (assistantctl roles lists them)")
    c.add_argument("-t", "--temperature", type=float)
    c.add_argument("-c", "--conversation", metavar="ID", help="continue this conversation")
    c.add_argument("--continue", dest="cont", action="store_true", help="continue the latest")
    c.add_argument("--logprobs", type=int, metavar="N", help="show N alternatives per token")
    c.add_argument("--max-tokens", type=int)
    c.add_argument("--no-stream", action="store_true")
    c.add_argument("-v", "--verbose", action="store_true", help="print usage after the answer")
    c.add_argument(
        "-a",
        "--attach",
        action="append",
        metavar="FILE",
        help="attach a file: text, an image or a PDF (repeatable); - reads stdin",
    )
    c.add_argument("--type", metavar="MIME", help="-a -: the type of stdin (default: sniffed)")
    c.add_argument(
        "--schema", metavar="FILE|JSON", help="answer as JSON under this JSON Schema; print it only"
    )
    c.set_defaults(func=cmd_chat)
    if chat_only:
        return p

    s = sub.add_parser("summarize", parents=[common], help="summarize a web page, or stdin with -")
    s.add_argument("source", metavar="URL|-", help="an http(s) URL, or - to read text from stdin")
    s.add_argument("-i", "--instructions", help="what the summary should focus on")
    s.add_argument("-m", "--model")
    s.add_argument("-p", "--provider")
    s.set_defaults(func=cmd_summarize)

    d = sub.add_parser("daemon", parents=[common], help="start, stop, status, restart, install")
    d.add_argument("action", choices=["start", "stop", "status", "restart", "install"])
    d.add_argument("--dry-run", action="store_true", help="install: print what would be written")
    d.add_argument(
        "--proxy-env",
        choices=["config", "unit", "no"],
        help="install: carry this shell's HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE... into the "
        "config's [network] or the unit (default: ask on a terminal, else only say)",
    )
    d.set_defaults(func=cmd_daemon)

    k = sub.add_parser("keys", parents=[common], help="API keys in the OS keyring")
    k.add_argument("action", choices=["set", "delete", "list"], nargs="?", default="list")
    k.add_argument("provider", nargs="?")
    k.set_defaults(func=cmd_keys)

    u = sub.add_parser("usage", parents=[common], help="tokens and cost across every client")
    u.add_argument(
        "--group-by", choices=["day", "provider", "model", "conversation"], default="day"
    )
    u.add_argument("--since", help="RFC 3339 time or date (inclusive)")
    u.add_argument("--until", help="RFC 3339 time or date (exclusive)")
    u.set_defaults(func=cmd_usage)

    sub.add_parser("providers", parents=[common], help="list providers").set_defaults(
        func=cmd_providers
    )
    m = sub.add_parser("models", parents=[common], help="list models")
    m.add_argument("-p", "--provider")
    m.set_defaults(func=cmd_models)

    v = sub.add_parser("conversations", aliases=["conv"], parents=[common], help="stored chats")
    v.add_argument(
        "action",
        choices=["list", "show", "search", "rm", "rename", "fork", "export"],
        nargs="?",
        default="list",
    )
    v.add_argument("words", nargs="*", metavar="ID|WORDS", help="an ID; search: WORDS...")
    v.add_argument("--limit", type=int, default=20)
    v.add_argument(
        "--before", metavar="CURSOR", help="list: the page after the one that gave CURSOR"
    )
    v.add_argument("--message", help="fork: the last message to keep")
    v.add_argument("--format", choices=["markdown", "json"], default="markdown")
    v.set_defaults(func=cmd_conversations)

    lo = sub.add_parser("local", parents=[common], help="local model servers (llama-server, ...)")
    lo.add_argument("action", choices=["list", "start", "stop", "logs"], nargs="?", default="list")
    lo.add_argument("name", nargs="?")
    lo.add_argument("-n", "--lines", type=int, default=50, help="logs: how many lines")
    lo.set_defaults(func=cmd_local)

    sub.add_parser("roles", parents=[common], help="named prompts (chat -r NAME)").set_defaults(
        func=cmd_roles
    )
    sub.add_parser(
        "doctor", parents=[common], help="socket, config, keys, local models, default model"
    ).set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = quick_chat(argv) or parser(chat_only=command_of(argv) == "chat").parse_args(argv)
    args.json = getattr(args, "json", False)
    args.raw = getattr(args, "raw", False)
    if not args.raw:
        guard_terminals()
    if args.command in ("conversations", "conv") and (problem := conversation_words(args)):
        print(f"assistantctl: {problem}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if args.command == "keys" and args.action in ("set", "delete") and not args.provider:
        print(f"assistantctl: keys {args.action} needs a PROVIDER", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    ctl = Ctl(args)
    try:
        code = args.func(ctl)
    except RpcError as e:
        explain(ctl, e)
        code = EXIT_ERROR
    except DaemonUnavailable as e:
        print(f"assistantctl: {e}", file=sys.stderr)
        code = EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_ERROR
    sys.exit(code)


if __name__ == "__main__":
    main()
