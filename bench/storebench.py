"""The conversation store at scale: a database of N conversations of M messages each,
written straight through ``assistantd.store.Store`` (a set-up, not a measurement), then
listed, read, searched and appended to through a running daemon."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

from measure import ViaDaemon
from procs import DaemonProc, Row, UpstreamProc, median

RARE = "zebrafinch"  # in one conversation of 1,000
ABSENT = "qqqnowhere"
PREFIXES = ("1 letter", "2 letters", "3 letters", "4 letters", "5 letters")


def _vocabulary(rng: random.Random, n: int) -> tuple[list[str], list[float]]:
    """Pseudo-words with Zipf-like frequencies (word i has weight 1/(i+1))."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(
        dict.fromkeys("".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(n * 2))
    )[:n]
    return words, list(accumulate(1 / (i + 1) for i in range(n)))


def populate(path: Path, conversations: int, per: int, seed: int = 42) -> dict[str, Any]:
    """Fill a fresh store; returns the words to search for and a sample of ids."""
    from assistantd.store import Store

    t0 = time.perf_counter()
    store = Store(path)
    store.open()
    db = store.db
    rng = random.Random(seed)
    vocab, cum = _vocabulary(rng, 20_000)
    start = datetime.now(UTC) - timedelta(minutes=conversations)
    sample: list[str] = []

    def ts(t: datetime) -> str:
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    db.execute("BEGIN")
    convs, msgs, search = [], [], []
    for k in range(conversations):
        t = start + timedelta(minutes=k)
        cid = f"c{int(t.timestamp() * 1000):011x}{rng.getrandbits(32):08x}"
        title = " ".join(rng.choices(vocab, cum_weights=cum, k=6))
        updated = ts(t + timedelta(seconds=per))
        convs.append((cid, title, "fake-echo", "fake", None, None, ts(t), updated))
        search.append((cid, title))
        if k % 97 == 0 and len(sample) < 1000:
            sample.append(cid)
        for j in range(per):
            words = rng.choices(vocab, cum_weights=cum, k=rng.randint(10, 50))
            if j == 0 and k % 1000 == 0:
                words.append(RARE)
            text = " ".join(words)
            mid = f"m{int(t.timestamp() * 1000) + j:011x}{rng.getrandbits(32):08x}"
            n, at = len(words), ts(t + timedelta(seconds=j))
            if j % 2 == 0:
                msgs.append(
                    (
                        mid,
                        cid,
                        j + 1,
                        "user",
                        text,
                        "complete",
                        "fake-echo",
                        "fake",
                        None,
                        None,
                        None,
                        None,
                        n,
                        at,
                    )
                )
            else:
                msgs.append(
                    (
                        mid,
                        cid,
                        j + 1,
                        "assistant",
                        text,
                        "complete",
                        "fake-echo",
                        "fake",
                        "stop",
                        100,
                        n,
                        100 + n,
                        n,
                        at,
                    )
                )
            search.append((cid, text))
        if len(msgs) >= 20_000 or k == conversations - 1:
            db.executemany(
                "INSERT INTO conversations(id, title, model, provider, system, source,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                convs,
            )
            db.executemany(
                "INSERT INTO messages(id, conversation_id, seq, role, content, status,"
                " model, provider, finish_reason, prompt_tokens, completion_tokens,"
                " total_tokens, tokens, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                msgs,
            )
            db.executemany("INSERT INTO search(conversation_id, text) VALUES (?, ?)", search)
            convs, msgs, search = [], [], []
    db.execute("COMMIT")
    store.fill_terms()  # the words a long prefix is read as (the inserts above skip them)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return {
        "common": vocab[0],
        "mid": vocab[200],
        "sample": sample,
        "seconds": time.perf_counter() - t0,
    }


def _timed(fn: Any, runs: int, budget_s: float = 4.0) -> list[float]:
    """Milliseconds per call: ``runs`` calls, or as many (at least 5) as fit the budget."""
    out: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(out) < runs and (len(out) < 5 or time.perf_counter() < deadline):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def bench_store(
    rows: list[Row],
    base: Path,
    env: dict[str, str],
    up: UpstreamProc,
    main: DaemonProc,
    conversations: int,
    per_conversation: int,
    runs: int,
    fixture: Path | None = None,
    with_send: bool = True,
) -> dict[str, Any]:
    """list, get, search and append at ``conversations`` x ``per_conversation`` messages.

    With ``fixture`` (a data folder), the store there is built once and reused by later
    runs (each run appends a few dozen messages to it)."""
    from assistantd.store import Store

    home = fixture or base / "storedata"
    db_path = home / "assistantd" / "conversations.sqlite3"
    saved = home / "fixture.json"
    if fixture is not None and saved.exists():
        info = json.loads(saved.read_text())
    else:
        info = populate(db_path, conversations, per_conversation)
        if fixture is not None:
            saved.write_text(json.dumps(info))
    size_mb = db_path.stat().st_size / 1e6
    d = DaemonProc(env, up.base_url, name="store", data_home=home)
    direct = Store(db_path)
    direct.open()
    res: dict[str, list[float]] = {}
    try:
        c = d.client()
        call = c.call
        rng = random.Random(7)
        sample = info["sample"]
        queries = {"common": info["common"], "mid": info["mid"], "rare": RARE, "absent": ABSENT}
        # Search as you type: the first keystrokes of the commonest word (in nearly every
        # message), prefixes of many words; 1-3 letters are read from the prefix index,
        # 4 and 5 as the words they start (search_terms).
        for n, name in enumerate(PREFIXES, 1):
            queries[name] = info["common"][:n]
        call("conversations/list", {"limit": 50})  # warm the page cache once
        res["status"] = _timed(lambda: call("daemon/status"), runs)
        res["list"] = _timed(lambda: call("conversations/list", {"limit": 50}), runs)
        res["list_sql"] = _timed(lambda: direct.list_conversations(50, 0, None), runs)
        deep = conversations // 2
        res["list_deep"] = _timed(
            lambda: call("conversations/list", {"limit": 50, "offset": deep}), runs
        )
        # The same page by cursor: the `next` of the item just before it.
        cursor = call("conversations/list", {"limit": 1, "offset": deep - 1}).get("next")
        if cursor is not None:
            res["list_cursor"] = _timed(
                lambda: call("conversations/list", {"limit": 50, "before": cursor}), runs
            )
        res["get"] = _timed(lambda: call("conversations/get", {"id": rng.choice(sample)}), runs)
        res["get_sql"] = _timed(lambda: direct.messages(rng.choice(sample)), runs)
        hits = {}
        for name, q in queries.items():
            res[f"search_{name}"] = _timed(
                lambda q=q: call("conversations/list", {"limit": 50, "query": q}), runs
            )
            res[f"search_{name}_sql"] = _timed(
                lambda q=q: direct.list_conversations(50, 0, q), runs
            )
            found = call("conversations/list", {"limit": 1, "query": q})
            exact = found.get("total_exact", True)
            hits[name] = f"{found['total']:,}" + ("" if exact else "+")
        target = sample[0]
        res["append_sql"] = _timed(
            lambda: direct.add_message(target, "user", "one more line"), runs
        )
        if with_send:
            big, small = ViaDaemon(d), ViaDaemon(main)

            def send(v: ViaDaemon, cid: str | None) -> str:
                params = {"message": "[[reply:ok]] next", "conversation_id": cid}
                return str(v.client.call("chat/send", params)["conversation_id"])

            # The baseline's conversations have 10 messages too, on the (small) main store.
            few = [send(small, None) for _ in range(10)]
            for _ in range(per_conversation // 2 - 1):
                for cid in few:
                    send(small, cid)
            res["send_big"] = _timed(lambda: send(big, rng.choice(sample)), runs)
            res["send_small"] = _timed(lambda: send(small, rng.choice(few)), runs)
        c.close()
    finally:
        direct.close()
        d.stop()
    m = {k: median(v) for k, v in res.items()}
    wal = db_path.with_name(db_path.name + "-wal")
    total_mb = (db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 1e6
    n_msgs = conversations * per_conversation
    s = f"4 store {conversations // 1000}k/{n_msgs // 1000}k"
    sql = "same SQL in-process"
    rows += [
        Row(
            s,
            "conversations/list (newest 50)",
            m["list"],
            "ms",
            m["list_sql"],
            sql,
            "< 50 ms",
            m["list"] < 50,
        ),
        Row(
            s,
            f"conversations/list offset {deep:,}",
            m["list_deep"],
            "ms",
            m["status"],
            "daemon/status",
        ),
        Row(s, "conversations/get (10 messages)", m["get"], "ms", m["get_sql"], sql),
    ]
    if "list_cursor" in m:
        rows.append(
            Row(
                s,
                f"conversations/list page {deep:,} by cursor (before)",
                m["list_cursor"],
                "ms",
                m["list_deep"],
                "the same page by offset",
                "< 5 ms",
                m["list_cursor"] < 5,
            )
        )
    for name, q in queries.items():
        typed = f" {q}*" if name in PREFIXES else ""
        rows.append(
            Row(
                s,
                f"search '{name}'{typed} ({hits[name]} conversations match)",
                m[f"search_{name}"],
                "ms",
                m[f"search_{name}_sql"],
                sql,
                "< 50 ms",
                m[f"search_{name}"] < 50,
            )
        )
    rows += [
        Row(s, "append: Store.add_message", m["append_sql"], "ms", m["status"], "daemon/status"),
    ]
    if with_send:
        rows.append(
            Row(
                s,
                "chat/send to a stored conversation",
                m["send_big"],
                "ms",
                m["send_small"],
                "same on a near-empty store",
            )
        )
    rows.append(Row(s, "database size", total_mb, "MB", size_mb, "right after the set-up"))
    return {
        "median_ms": m,
        "samples_ms": res,
        "hits": hits,
        "size_mb": total_mb,
        "populate_s": info["seconds"],
        "conversations": conversations,
        "messages": n_msgs,
        "ready_s": d.ready_s,
    }


def bench_migration(rows: list[Row], store_db: Path, work: Path) -> dict[str, float]:
    """Migrations 4 and 5 (the search prefix index, the list of words) on a copy of
    ``store_db`` taken back to schema version 3: how long ``Store.open`` takes, and the
    file before and after."""
    import shutil
    import sqlite3

    from assistantd.store import Store

    path = work / "migrate" / "conversations.sqlite3"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store_db, path)
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(  # version 3's search table: the same rows, no prefix index
        """BEGIN;
        CREATE TEMP TABLE old(id INTEGER PRIMARY KEY, conversation_id TEXT, text TEXT);
        INSERT INTO old SELECT rowid, conversation_id, text FROM search;
        DROP TABLE search;
        CREATE VIRTUAL TABLE search USING fts5(conversation_id UNINDEXED, text);
        INSERT INTO search(rowid, conversation_id, text) SELECT * FROM old;
        DROP TABLE IF EXISTS search_terms;
        PRAGMA user_version=3;
        COMMIT;
        VACUUM;"""
    )
    db.close()
    before = path.stat().st_size / 1e6
    t0 = time.perf_counter()
    store = Store(path)
    store.open()
    seconds = time.perf_counter() - t0
    store.close()  # the last connection: the WAL is checkpointed into the file
    after = path.stat().st_size / 1e6
    shutil.rmtree(path.parent)
    s = "4 store: migrations 4-5 (search prefix index, words)"
    rows += [
        Row(s, "Store.open from schema version 3", round(seconds, 1), "s"),
        Row(s, "database size after", after, "MB", before, "at schema version 3"),
    ]
    return {"seconds": seconds, "size_before_mb": before, "size_after_mb": after}


def main(argv: list[str] | None = None) -> int:
    """Section 4 alone, on a store built once in ``--fixture`` and reused."""
    import argparse
    import shutil
    import sys

    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root), str(root / "bench")]
    import run

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--fixture", type=Path, required=True, help="data folder to build or reuse")
    ap.add_argument("--conversations", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-send", action="store_true", help="leave out the chat/send row")
    ap.add_argument(
        "--migration",
        action="store_true",
        help="also time migrations 4-5 on a copy of the store taken back to schema version 3",
    )
    args = ap.parse_args(argv)
    base, env = run.isolate()
    rows: list[Row] = []
    up = UpstreamProc(root, env)
    try:
        main_daemon = DaemonProc(env, up.base_url)
        try:
            bench_store(
                rows,
                base,
                env,
                up,
                main_daemon,
                args.conversations,
                10,
                args.runs,
                args.fixture,
                not args.no_send,
            )
        finally:
            main_daemon.stop()
        if args.migration:
            bench_migration(rows, args.fixture / "assistantd" / "conversations.sqlite3", base)
    finally:
        up.stop()
        shutil.rmtree(base, ignore_errors=True)
    run.print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
