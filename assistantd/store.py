"""Conversations in one SQLite file (WAL, numbered migrations, FTS5 search).

All access goes through one worker thread (``Store.run``), so the event loop never
waits on the disk and the connection is never shared between threads. Every write is
one ``BEGIN IMMEDIATE`` transaction: a failure part way leaves nothing half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from assistantd import pidlock

T = TypeVar("T")

log = logging.getLogger("assistantd.store")

SEARCH_TOTAL_CAP = 1000  # search counts matching conversations exactly up to here
# A last word of this many letters or more is searched as the words it starts (from
# ``search_terms``), as long as there are no more of them than ``PREFIX_TERMS_MAX``:
# FTS5 steps every one of an OR's terms for each row (778 terms: 80 ms; 29: 20 ms).
PREFIX_EXPAND_FROM = 4  # shorter ones have the table's prefix index (migration 4)
PREFIX_TERMS_MAX = 64

# The search table's words, read through an fts5vocab table (which counts every posting
# of each word on the way: about a second at 1M messages, once), and the row they are
# listed up to.
_FILL_TERMS = """
    CREATE VIRTUAL TABLE temp.search_vocab USING fts5vocab(main, search, 'row');
    INSERT OR IGNORE INTO search_terms SELECT term FROM temp.search_vocab;
    DROP TABLE temp.search_vocab;
    UPDATE search_terms_upto SET upto = (SELECT COALESCE(MAX(rowid), 0) FROM search);
"""
# A scratch FTS5 table (per connection, never on disk) that splits a text into words
# exactly as the search table does (the same default tokenizer: folded case, accents).
_TOKENIZER = """
    CREATE VIRTUAL TABLE temp.search_tok USING fts5(text, content='');
    CREATE VIRTUAL TABLE temp.search_tok_terms USING fts5vocab(temp, search_tok, 'row');
    CREATE VIRTUAL TABLE temp.search_tok_words USING fts5vocab(temp, search_tok, 'instance');
"""

MIGRATIONS: list[str] = [
    # 1: conversations, messages and full-text search over both
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        model TEXT, provider TEXT, system TEXT,
        source TEXT,                       -- JSON: what a summary was made of
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL
    );
    CREATE INDEX conversations_updated ON conversations(updated_at DESC);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        context TEXT,                      -- JSON list of {name, text} attachments
        status TEXT NOT NULL DEFAULT 'complete',
        model TEXT, provider TEXT, finish_reason TEXT,
        prompt_tokens INTEGER, completion_tokens INTEGER, cached_tokens INTEGER,
        total_tokens INTEGER, tokens INTEGER,
        logprobs TEXT,                     -- JSON
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX messages_seq ON messages(conversation_id, seq);
    CREATE VIRTUAL TABLE search USING fts5(conversation_id UNINDEXED, text);
    """,
    # 2: a usage ledger (kept when conversations are deleted), costs, compaction summaries
    """
    ALTER TABLE messages ADD COLUMN cost REAL;
    CREATE TABLE usage_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        provider TEXT NOT NULL, model TEXT NOT NULL,
        conversation_id TEXT,              -- no foreign key: spend outlives a deleted chat
        kind TEXT NOT NULL,                -- chat, summarize, compact
        prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL DEFAULT 0, total_tokens INTEGER NOT NULL,
        cost REAL                          -- USD; NULL when the model's price is unknown
    );
    CREATE INDEX usage_log_at ON usage_log(at);
    CREATE TABLE compactions (
        id TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        upto_seq INTEGER NOT NULL,         -- the summary stands in for messages up to here
        content TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX compactions_conv ON compactions(conversation_id, upto_seq);
    """,
    # 3: the role a conversation was started with (assistantd/roles.py); continuing keeps it
    """
    ALTER TABLE conversations ADD COLUMN role TEXT;
    """,
    # 4: search with an index of every word's first 1, 2 and 3 letters, so the first
    # keystrokes of search as you type read a few rows, not every posting of every word
    # they start (a one-letter prefix at 1M messages: 200+ ms before, about 10 ms after).
    # An FTS5 table's options are fixed when it is made: its rows (rowids too, which give
    # the newest match first) go through a temporary table into one made anew, so the
    # file grows by the new index only (+45% at 1M messages), not by a second copy.
    """
    CREATE TEMP TABLE search_old(id INTEGER PRIMARY KEY, conversation_id TEXT, text TEXT);
    INSERT INTO temp.search_old SELECT rowid, conversation_id, text FROM search;
    DROP TABLE search;
    CREATE VIRTUAL TABLE search USING fts5(conversation_id UNINDEXED, text, prefix='1 2 3');
    INSERT INTO search(rowid, conversation_id, text)
        SELECT id, conversation_id, text FROM temp.search_old;
    DROP TABLE temp.search_old;
    """,
    # 5: every word the search index holds (filled here from the index itself, then
    # brought up to date by the search that needs it: ``Store._list_new_words``), so that
    # a prefix of 4 letters or more, past the prefix index, is searched as the few words
    # it starts, joined by OR, which FTS5 reads lazily, newest first. As a prefix query
    # FTS5 merges every posting of those words before the first row (the commonest word
    # at 1M messages: 60-80 ms; about 18 ms as OR). A deleted conversation's words
    # stay: a word that matches nothing costs nothing.
    f"""
    CREATE TABLE search_terms(term TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE search_terms_upto(upto INTEGER NOT NULL);  -- one row: the search rowid
    INSERT INTO search_terms_upto VALUES (0);
    {_FILL_TERMS}
    """,
]


class StoreError(Exception):
    """The store cannot be used; the message is one line that says why."""


class SchemaTooNew(StoreError):
    """The database was written by a newer assistantd (its schema is unknown here)."""


class DataDirBusy(StoreError):
    """Another assistantd holds the data folder's lock."""


class BadCursor(ValueError):
    """A ``before`` cursor this store did not hand out."""


class Page(NamedTuple):
    """One page of ``list_conversations``."""

    conversations: list[dict[str, Any]]
    total: int  # with ``total_exact`` false, a lower bound: more match
    total_exact: bool
    next: str | None  # the cursor of the page after this one; None on the last


_SUMMARY = (
    "c.id, c.title, c.model, c.provider, c.created_at, c.updated_at,"
    " (SELECT COUNT(*) FROM messages m WHERE m.conversation_id=c.id) AS message_count"
)


def _cursor(row: dict[str, Any]) -> str:
    """An opaque position in the list: the last item's ``updated_at`` and id."""
    return f"{row['updated_at']}~{row['id']}"


def _parse_cursor(cursor: str) -> tuple[str, str]:
    updated, sep, cid = cursor.partition("~")
    if not sep or not updated or not cid:
        raise BadCursor(cursor)
    return updated, cid


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """Time-ordered ids: creation order sorts lexically."""
    return f"{prefix}{time.time_ns() // 1_000_000:011x}{secrets.token_hex(4)}"


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name("assistantd.lock")
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._closed = False
        self._count: tuple[int, int] | None = None  # (data_version, conversations)
        # Called (on the store's thread) with (conversation id, change) after each write
        # that other clients may want to know of; the daemon forwards it to the event loop.
        self.on_change: Callable[[str, str], None] | None = None
        self._quiet = False

    def _changed(self, cid: str, change: str) -> None:
        if self.on_change is not None and not self._quiet:
            self.on_change(cid, change)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        return await self.start(func, *args)

    def start(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue ``func`` on the store's thread now (in order behind the calls queued
        before it) and return its future, so that other work can go on meanwhile.
        Await it with ``asyncio.wait``: a plain ``await`` that is cancelled would cancel
        a call still queued."""
        return asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    def lock(self) -> None:
        """Take the data folder's lock (one daemon per database), never through a
        symbolic link; ``DataDirBusy`` says which process holds it."""
        folder = self.lock_path.parent
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self._lock_fd = pidlock.take(self.lock_path)
        except pidlock.Held as e:
            raise DataDirBusy(
                f"another assistantd (pid {e.pid}) is using the data folder {folder}"
            ) from None
        except pidlock.SymlinkRefused as e:
            raise StoreError(str(e)) from None
        except OSError as e:
            raise StoreError(f"cannot open {self.lock_path}: {e.strerror}") from None

    def open(self) -> None:
        """Open the database and bring its schema up to date; a schema newer than this
        code knows is refused (``SchemaTooNew``), not used."""
        self.migrate(self.connect())

    def connect(self) -> int:
        """Open the database and check its schema version (returned); no migration yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            db.close()
            raise SchemaTooNew(
                f"{self.path} has schema version {version}, newer than this assistantd knows"
                f" ({len(MIGRATIONS)}): run a newer assistantd, or move the file away"
            )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_TOKENIZER)
        self._db = db
        return int(version)

    def migrate(self, version: int) -> None:
        """Bring the schema from ``version`` up to date, one transaction per step."""
        db = self.db
        for n, script in enumerate(MIGRATIONS[version:], version + 1):
            if version:  # a new file's schema is not news (and takes no time)
                log.info("updating %s to schema version %d", self.path, n)
            t0 = time.monotonic()
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={n}; COMMIT;")
            if version:
                log.info("schema version %d in %.1f s", n, time.monotonic() - t0)

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        """Queue a write without waiting for it (ordered; run before ``close`` closes);
        a failure is logged."""
        self._pool.submit(func, *args).add_done_callback(_log_failure)

    async def aopen(self) -> asyncio.Future[None]:
        """Open the database and check its schema now; its migrations run next on the
        store's thread, and the future returned settles when they are done. Every store
        call queues behind them (one thread, in order), so a daemon can answer
        ``daemon/status`` while an older store is upgraded (about a minute at a million
        messages) rather than refuse every connection meanwhile. A new file's schema is
        made before this returns."""
        version = await self.run(self.connect)
        migrating = asyncio.wrap_future(self._pool.submit(self.migrate, version))
        if version == 0:  # a new file: its tables take milliseconds, made before serving
            await migrating
        return migrating

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Run the writes still queued, then close the database and drop the lock."""
        if self._closed:
            return
        self._closed = True
        self._pool.submit(self._close_db)  # after every write queued before it
        self._pool.shutdown(wait=True)

    async def aclose(self) -> None:
        """``close`` without blocking the event loop while the queued writes finish."""
        if self._closed:
            return
        await self.run(self._close_db)
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction (the autocommit connection's ``with db``
        would begin none); a write inside another joins it."""
        db = self.db
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:  # a failed COMMIT too: never leave it open for the next write
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One transaction around several writes (each joins it): all or none is kept."""
        return self._write()

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "store not open"
        return self._db

    # -- conversations -------------------------------------------------------------

    def create_conversation(
        self,
        *,
        title: str,
        model: str | None,
        provider: str | None,
        system: str | None,
        source: dict[str, Any] | None = None,
        role: str | None = None,
        cid: str | None = None,
    ) -> str:
        """A new conversation (with the id ``cid`` when one was made beforehand)."""
        cid, ts = cid or new_id("c"), now()
        self._count = None  # our own writes do not move data_version
        with self._write():
            self.db.execute(
                "INSERT INTO conversations(id, title, model, provider, system, source, role,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    cid,
                    title,
                    model,
                    provider,
                    system,
                    json.dumps(source) if source else None,
                    role,
                    ts,
                    ts,
                ),
            )
            self._index(cid, title)
        self._changed(cid, "created")
        return cid

    def conversation(self, cid: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM conversations WHERE id=?", (cid,)).fetchone()
        return dict(row) if row else None

    def list_conversations(
        self, limit: int, offset: int = 0, query: str | None = None, before: str | None = None
    ) -> Page:
        """A page of conversations, newest first: after the cursor ``before`` (the
        ``next`` of the page before, which costs the same at any depth), else at
        ``offset``. With ``query``, those whose title or messages match instead."""
        if query:
            return self._search(query, limit, offset)
        total = self._conversation_count()
        if before is not None:
            updated, cid = _parse_cursor(before)
            rows = self.db.execute(
                f"SELECT {_SUMMARY} FROM conversations c"
                " WHERE c.updated_at <= ? AND (c.updated_at < ? OR c.id < ?)"
                " ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
                (updated, updated, cid, limit + 1),
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {_SUMMARY} FROM conversations c ORDER BY c.updated_at DESC, c.id DESC"
                " LIMIT ? OFFSET ?",
                (limit + 1, offset),
            ).fetchall()
        page = [dict(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(page, total, True, _cursor(page[-1]) if more else None)

    def _conversation_count(self) -> int:
        """How many conversations there are, counted again only after a write (ours, or
        another connection's: ``data_version``); counting 100k takes milliseconds."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if self._count is None or self._count[0] != version:
            n = self.db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
            self._count = (version, n)
        return self._count[1]

    def _search(self, query: str, limit: int, offset: int) -> Page:
        """Conversations whose title or messages match, most recently matching first.

        One walk over the matches, newest first, that stops once it has the page and
        ``SEARCH_TOTAL_CAP`` + 1 conversations: a word in every conversation of a large
        store costs what a page costs, and ``total`` is exact only up to the cap.

        The last word matches as a prefix too (``_prefix``), unless it alone already
        matches more than the cap as a whole word."""
        want = max(offset + limit, SEARCH_TOTAL_CAP) + 1
        words = _query_words(query)
        ids, exact = self._walk(_fts_query(words), want)
        if exact and words:  # fewer than the cap as whole words: the prefix may add some
            last = self._prefix(words[-1])
            if last is not None:
                ids, exact = self._walk(_fts_query(words, last), want)
        total = len(ids) if exact else want - 1
        page = ids[offset : offset + limit]
        if not page:
            return Page([], total, exact, None)
        marks = ",".join("?" * len(page))
        found = {
            r["id"]: dict(r)
            for r in self.db.execute(
                f"SELECT {_SUMMARY} FROM conversations c WHERE c.id IN ({marks})", page
            )
        }
        return Page([found[c] for c in page if c in found], total, exact, None)

    def _prefix(self, word: str) -> str | None:
        """The FTS5 expression for the words that start with ``word``; None when none does.

        Both forms are read lazily, newest first: 1 to 3 letters from the table's prefix
        index, a longer word as the words it starts joined by OR (``search_terms``).
        Past ``PREFIX_TERMS_MAX`` of those, or for a word that splits in two
        (``foo.ba``: a phrase), FTS5's own prefix query, which reads every posting of the
        words first (few words share four letters)."""
        star = _quote(word) + "*"
        if len(word) < PREFIX_EXPAND_FROM:
            return star
        tokens = self._tokens(word)
        if len(tokens) != 1 or len(tokens[0]) < PREFIX_EXPAND_FROM:
            return star
        try:
            self._list_new_words()
        except sqlite3.Error as e:  # a search still answers, the slower way
            log.warning("cannot list the new words for search: %s", e)
            return star
        # Text compares as UTF-8 bytes, in code point order; U+10FFFF is no word's letter.
        terms = self.db.execute(
            "SELECT term FROM search_terms WHERE term >= ? AND term < ? LIMIT ?",
            (tokens[0], tokens[0] + "\U0010ffff", PREFIX_TERMS_MAX + 1),
        ).fetchall()
        if not terms:
            return None
        if len(terms) > PREFIX_TERMS_MAX:
            return star
        return "(" + " OR ".join(_quote(t) for (t,) in terms) + ")"

    def _tokens(self, text: str) -> list[str]:
        """The words of ``text`` as the search index holds them (case and accents folded)."""
        db = self.db
        db.execute("INSERT INTO temp.search_tok(text) VALUES (?)", (text,))
        try:
            rows = db.execute("SELECT term FROM temp.search_tok_words ORDER BY offset")
            return [t for (t,) in rows]
        finally:
            db.execute("INSERT INTO temp.search_tok(search_tok) VALUES ('delete-all')")

    def _index(self, cid: str, text: str) -> None:
        """Make ``text`` searchable. Its words are listed in ``search_terms`` later, by
        the next search that needs them: listing them here cost a write 3x what the FTS5
        row costs, and with 100 chats at once every question queues on this thread
        before its first token goes out."""
        self.db.execute("INSERT INTO search(conversation_id, text) VALUES (?, ?)", (cid, text))

    def _list_new_words(self) -> None:
        """Add the words of the search rows written since the last call to
        ``search_terms``, all in one pass through the scratch tokenizer."""
        db = self.db
        (upto,) = db.execute("SELECT upto FROM search_terms_upto").fetchone()
        (top,) = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM search").fetchone()
        if top <= upto:
            return
        with self._write():
            db.execute(
                "INSERT INTO temp.search_tok(text) SELECT text FROM search WHERE rowid > ?",
                (upto,),
            )
            db.execute("INSERT OR IGNORE INTO search_terms SELECT term FROM temp.search_tok_terms")
            db.execute("INSERT INTO temp.search_tok(search_tok) VALUES ('delete-all')")
            db.execute("UPDATE search_terms_upto SET upto=?", (top,))

    def fill_terms(self) -> None:
        """List every word of the search table now, from its index (a second at 1M
        messages), not by the next search reading the new rows' text: for a bulk load
        that wrote the table itself (the benchmark's), after its commit."""
        self.db.executescript(_FILL_TERMS)

    def _walk(self, match: str, want: int) -> tuple[list[str], bool]:
        """The first ``want`` distinct conversations of the matches, newest match first,
        and whether that is all of them."""
        ids: dict[str, None] = {}
        hits = self.db.execute(
            "SELECT conversation_id FROM search WHERE search MATCH ? ORDER BY rowid DESC", (match,)
        )
        for (cid,) in hits:
            ids.setdefault(cid)
            if len(ids) >= want:
                return list(ids), False
        return list(ids), True

    def rename(self, cid: str, title: str) -> bool:
        with self._write():
            cur = self.db.execute(
                "UPDATE conversations SET title=?, updated_at=? WHERE id=?", (title, now(), cid)
            )
            if cur.rowcount:
                self._index(cid, title)
        if cur.rowcount:
            self._changed(cid, "renamed")
        return cur.rowcount > 0

    def delete(self, cid: str) -> bool:
        self._count = None
        with self._write():
            cur = self.db.execute("DELETE FROM conversations WHERE id=?", (cid,))
            self.db.execute("DELETE FROM search WHERE conversation_id=?", (cid,))
            # The next row may take a rowid of those deleted (the highest plus one):
            # make sure it is not taken as listed already.
            self.db.execute(
                "UPDATE search_terms_upto SET upto ="
                " MIN(upto, (SELECT COALESCE(MAX(rowid), 0) FROM search))"
            )
        if cur.rowcount:
            self._changed(cid, "deleted")
        return cur.rowcount > 0

    # -- messages ------------------------------------------------------------------

    def messages(self, cid: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM messages WHERE conversation_id=? ORDER BY seq", (cid,)
        ).fetchall()
        return [dict(r) for r in rows]

    def add_message(self, cid: str, role: str, content: str, **fields: Any) -> str:
        """Append a message; JSON fields (``context``, ``logprobs``) are serialized here."""
        mid = new_id("m")
        for key in ("context", "logprobs"):
            if fields.get(key) is not None:
                fields[key] = json.dumps(fields[key], ensure_ascii=False)
        names = ["id", "conversation_id", "seq", "role", "content", "created_at", *fields]
        with self._write():
            seq = self.db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id=?", (cid,)
            ).fetchone()[0]
            self.db.execute(
                f"INSERT INTO messages({','.join(names)}) VALUES ({','.join('?' * len(names))})",
                (mid, cid, seq, role, content, now(), *fields.values()),
            )
            self._index(cid, content)
            self.db.execute("UPDATE conversations SET updated_at=? WHERE id=?", (now(), cid))
        if role == "assistant":
            self._changed(cid, "answered")
        return mid

    def latest_compaction(self, cid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT upto_seq, content FROM compactions WHERE conversation_id=?"
            " ORDER BY upto_seq DESC LIMIT 1",
            (cid,),
        ).fetchone()
        return dict(row) if row else None

    def add_compaction(self, cid: str, upto_seq: int, content: str) -> None:
        with self._write():
            self.db.execute(
                "INSERT INTO compactions(id, conversation_id, upto_seq, content, created_at)"
                " VALUES (?,?,?,?,?)",
                (new_id("s"), cid, upto_seq, content, now()),
            )

    def delete_message(self, mid: str) -> None:
        with self._write():
            self.db.execute("DELETE FROM messages WHERE id=?", (mid,))

    def fork(self, cid: str, upto: str | None) -> str | None:
        """Copy a conversation up to a message, all in one transaction."""
        skip = {"id", "conversation_id", "seq", "role", "content", "created_at"}
        self._quiet = True  # one "created" for the fork, once it is committed
        try:
            with self._write():
                conv = self.conversation(cid)
                if conv is None:
                    return None
                msgs = self.messages(cid)
                if upto is not None:
                    ids = [m["id"] for m in msgs]
                    if upto not in ids:
                        raise KeyError(upto)
                    msgs = msgs[: ids.index(upto) + 1]
                new = self.create_conversation(
                    title=f"{conv['title']} (fork)",
                    model=conv["model"],
                    provider=conv["provider"],
                    system=conv["system"],
                    role=conv["role"],
                    source=json.loads(conv["source"]) if conv["source"] else None,
                )
                for m in msgs:
                    extra = {k: v for k, v in m.items() if k not in skip}
                    for key in ("context", "logprobs"):
                        if extra.get(key) is not None:
                            extra[key] = json.loads(extra[key])
                    self.add_message(new, m["role"], m["content"], **extra)
        finally:
            self._quiet = False
        self._changed(new, "created")
        return new


def _log_failure(done: Future[Any]) -> None:
    if not done.cancelled() and (e := done.exception()) is not None:
        log.error("a queued write failed: %s", e, exc_info=e)


def _query_words(query: str) -> list[str]:
    """The user's words. A NUL (which ends an FTS5 string) separates words, and a lone
    surrogate (which is not UTF-8) becomes "?": odd input is a plain search, not an error."""
    return query.replace("\0", " ").encode("utf-8", "replace").decode("utf-8").split()


def _quote(word: str) -> str:
    """A word as one FTS5 string: no FTS syntax in the user's words is ever parsed."""
    return '"' + word.replace('"', '""') + '"'


def _fts_query(words: list[str], last: str | None = None) -> str:
    """Every word whole (far cheaper on a large store than as a prefix), or the last one
    replaced by the FTS5 expression ``last``."""
    terms = [_quote(w) for w in words] or ['""']
    if last is not None:
        terms[-1] = last
    return " AND ".join(terms)  # (FTS5 joins a bracketed OR to the rest by AND only)
