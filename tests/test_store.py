"""The conversation store through a real daemon: atomic writes (a real SQLite trigger
makes a write fail part way), one daemon per data folder, a newer schema refused, the
queued ledger writes kept at shutdown, odd search input, the bounded search total,
short and long prefixes (a failure to list new words too) and the migrations that index
them, and the list cursor."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistantd.client import RpcError
from tests.conftest import ROOT, Daemon
from tests.rawsock import Raw, req
from tests.upstream import Upstream


def db_path() -> Path:
    return Path(os.environ["XDG_DATA_HOME"]) / "assistantd" / "conversations.sqlite3"


@pytest.fixture
def sql() -> Iterator[sqlite3.Connection]:
    """A second connection to the daemon's own database file, as another program has."""
    db = sqlite3.connect(db_path(), isolation_level=None, timeout=10)
    yield db
    db.close()


def send(d: Daemon, message: str, cid: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"message": message, "stream": False}
    if cid:
        params["conversation_id"] = cid
    result: dict[str, Any] = d.call("chat/send", params)
    return result


def poll(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- atomic writes -------------------------------------------------------------------------


def test_failed_fork_leaves_nothing(daemon: Daemon, sql: sqlite3.Connection) -> None:
    """A fork whose message copy fails part way leaves no forked conversation, message or
    search row behind."""
    cid = send(daemon, "[[reply:one]] first")["conversation_id"]
    send(daemon, "[[reply:two]] second", cid)
    sql.execute(
        "CREATE TRIGGER refuse_fork BEFORE INSERT ON messages"
        " WHEN (SELECT title FROM conversations WHERE id = NEW.conversation_id) LIKE '%(fork)'"
        " BEGIN SELECT RAISE(ABORT, 'fork refused'); END"
    )
    with pytest.raises(RpcError):
        daemon.call("conversations/fork", {"id": cid})
    assert sql.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 1
    assert sql.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 4
    orphans = sql.execute(
        "SELECT COUNT(*) FROM search WHERE conversation_id NOT IN (SELECT id FROM conversations)"
    ).fetchone()[0]
    assert orphans == 0
    assert daemon.call("conversations/list")["total"] == 1


def test_failed_message_write_leaves_nothing(daemon: Daemon, sql: sqlite3.Connection) -> None:
    """A message whose last statement (the conversation's new updated_at) fails is not
    stored, neither as a message nor in the search index."""
    cid = send(daemon, "[[reply:one]] first")["conversation_id"]
    sql.execute(
        "CREATE TRIGGER refuse_poison BEFORE UPDATE OF updated_at ON conversations"
        " WHEN EXISTS (SELECT 1 FROM messages WHERE conversation_id = NEW.id"
        " AND content LIKE '%POISON%')"
        " BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
    )
    with pytest.raises(RpcError):
        send(daemon, "[[reply:never]] POISON", cid)
    assert (
        sql.execute("SELECT COUNT(*) FROM messages WHERE content LIKE '%POISON%'").fetchone()[0]
        == 0
    )
    assert sql.execute("SELECT COUNT(*) FROM search WHERE search MATCH 'POISON'").fetchone()[0] == 0
    assert daemon.call("conversations/list", {"query": "poiso"})["total"] == 0
    assert sql.execute("SELECT COUNT(*) FROM search_terms WHERE term='poison'").fetchone()[0] == 0


def test_question_is_stored_before_the_first_delta(daemon: Daemon, sql: sqlite3.Connection) -> None:
    """The provider is asked while the question is written, but no delta goes out before
    the question is stored. A real trigger makes that write take most of a second, far
    longer than the answer's first word; another connection to the file, looking at the
    first delta, finds the question committed."""
    sql.execute("CREATE TABLE slow(x)")
    sql.executemany("INSERT INTO slow VALUES (?)", [(i,) for i in range(3000)])
    sql.execute(
        "CREATE TRIGGER slow_question AFTER INSERT ON messages WHEN NEW.role = 'user'"
        " BEGIN SELECT COUNT(*) FROM slow a, slow b WHERE a.x + b.x < 0; END"
    )
    seen: list[list[tuple[str, str]]] = []

    def on_notify(method: str, params: dict[str, Any]) -> None:
        if method == "chat/delta" and not seen:
            rows = sql.execute(
                "SELECT role, content FROM messages WHERE conversation_id = ?",
                (params["conversation_id"],),
            ).fetchall()
            seen.append([tuple(r) for r in rows])

    with daemon.client() as c:
        r = c.call("chat/send", {"message": "[[words:5]] look"}, on_notify=on_notify)
    assert seen[0] == [("user", "[[words:5]] look")]
    assert r["text"] == "w1 w2 w3 w4 w5"


def test_failed_question_write_shows_no_answer(daemon: Daemon, sql: sqlite3.Connection) -> None:
    """A question the store cannot write (a real trigger refuses it) fails the request
    with nothing of the answer shown and nothing stored, not even an empty conversation;
    the daemon serves on."""
    sql.execute(
        "CREATE TRIGGER refuse_question BEFORE INSERT ON messages"
        " WHEN NEW.role = 'user' AND NEW.content LIKE '%REFUSED%'"
        " BEGIN SELECT RAISE(ABORT, 'question refused'); END"
    )
    notes: list[str] = []
    with daemon.client() as c, pytest.raises(RpcError) as e:
        c.call(
            "chat/send",
            {"message": "[[words:20]] REFUSED"},
            on_notify=lambda m, p: notes.append(m),
        )
    assert e.value.code == -32603, e.value
    assert "chat/delta" not in notes
    assert sql.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
    assert sql.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 0
    r = daemon.call("chat/send", {"message": "[[reply:fine]] next", "stream": False})
    assert r["text"] == "fine"
    assert [
        m["role"]
        for m in daemon.call("conversations/get", {"id": r["conversation_id"]})["messages"]
    ] == ["user", "assistant"]


# -- one daemon per database, and only a schema it knows -----------------------------------


def test_second_daemon_on_the_same_data_folder_exits(
    daemon: Daemon, make_daemon: Any, tmp_path: Path
) -> None:
    """A second daemon on another socket but the same data folder exits non-zero with a
    one-line reason naming the first; the first keeps serving."""
    other = Path(os.environ["XDG_RUNTIME_DIR"]) / "other.sock"
    second: Daemon = make_daemon(
        daemon.config_path.read_text(), args=("--socket", str(other), "--quiet"), wait=False
    )
    assert second.proc.wait(30) != 0
    lines = second.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert "data folder" in lines[0] and f"pid {daemon.proc.pid}" in lines[0]
    assert not other.exists()
    assert daemon.call("daemon/status")["pid"] == daemon.proc.pid


def test_newer_schema_is_refused(make_daemon: Any) -> None:
    """A database whose schema version is newer than the code knows makes the daemon exit
    non-zero with a clear reason, and the file is left as it was."""
    path = db_path()
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future(x)")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    d: Daemon = make_daemon("", args=("--quiet",), wait=False)
    assert d.proc.wait(30) != 0
    err = d.stderr().strip()
    assert len(err.splitlines()) == 1 and "schema version 99" in err and "newer" in err
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"future"}


# -- queued writes at shutdown ------------------------------------------------------------


def _ledger_rows(sql: sqlite3.Connection) -> int:
    return int(sql.execute("SELECT COUNT(*) FROM usage_log").fetchone()[0])


def test_shutdown_runs_the_queued_ledger_writes(
    daemon: Daemon, upstream: Upstream, sql: sqlite3.Connection
) -> None:
    """Usage ledger rows still queued behind slow writes when the daemon is told to stop
    are all written before it exits."""
    send(daemon, "[[reply:warm]] hi")
    assert _ledger_rows(sql) == 1
    # A real trigger makes each ledger insert take most of a second.
    sql.execute("CREATE TABLE slow(x)")
    sql.executemany("INSERT INTO slow VALUES (?)", [(i,) for i in range(3000)])
    sql.execute(
        "CREATE TRIGGER slow_ledger AFTER INSERT ON usage_log"
        " BEGIN SELECT COUNT(*) FROM slow a, slow b WHERE a.x + b.x < 0; END"
    )
    n = 6
    r = Raw(daemon.socket, timeout=30)
    for i in range(n):
        r.send(req(i, "chat/send", {"message": f"[[reply:ok]] {i}", "stream": False}))
    # Every answer has come from upstream, and one slow row went in since: the daemon has
    # had most of a second to queue each answer's ledger row, and most are still queued.
    poll(lambda: len(upstream.requests) == n + 1 and upstream.in_flight == 0)
    before = _ledger_rows(sql)
    poll(lambda: _ledger_rows(sql) > before)
    assert _ledger_rows(sql) < n + 1
    r.close()  # the answers' own writes are dropped with the connection; the ledger's stay
    daemon.call("daemon/shutdown")
    assert daemon.proc.wait(60) == 0
    assert _ledger_rows(sql) == n + 1


def test_a_failed_queued_write_is_logged(daemon: Daemon, sql: sqlite3.Connection) -> None:
    """A ledger write that fails is logged with its reason, not dropped in silence."""
    sql.execute(
        "CREATE TRIGGER refuse_ledger BEFORE INSERT ON usage_log"
        " BEGIN SELECT RAISE(ABORT, 'ledger refused'); END"
    )
    send(daemon, "[[reply:ok]] hi")
    poll(lambda: "ledger refused" in daemon.stderr())
    assert "a queued write failed" in daemon.stderr()


# -- search input and the bounded total ---------------------------------------------------


@pytest.mark.parametrize("query", ["apple\u0000pie", "\udc80", "apple \udc80pie"])
def test_odd_search_input_is_a_plain_search(daemon: Daemon, query: str) -> None:
    """A NUL or a lone surrogate in a search query gives a plain search, not an error."""
    send(daemon, "[[reply:noted]] apple pie recipe")
    r = Raw(daemon.socket)
    try:
        r.send(req(1, "conversations/list", {"query": query}))
        reply = r.response(1)
    finally:
        r.close()
    assert "result" in reply, reply
    if query.startswith("apple\u0000"):
        assert reply["result"]["total"] == 1


def test_search_total_is_exact_up_to_the_cap(daemon: Daemon, sql: sqlite3.Connection) -> None:
    """Past 1,000 matching conversations a search says `total: 1000` with `total_exact:
    false`; under the cap the total is exact; a last word that alone matches more than
    the cap is not also matched as a prefix."""
    send(daemon, "[[reply:ok]] hello")  # the schema is in place
    rows = [(f"c{i:020d}", f"walrus number {i}") for i in range(1200)]
    sql.execute("BEGIN")
    sql.executemany(
        "INSERT INTO conversations(id, title, created_at, updated_at)"
        " VALUES (?, ?, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
        rows,
    )
    sql.executemany("INSERT INTO search(conversation_id, text) VALUES (?, ?)", rows)
    sql.execute("COMMIT")
    many = daemon.call("conversations/list", {"query": "walrus", "limit": 5})
    assert (many["total"], many["total_exact"]) == (1000, False)
    assert len(many["conversations"]) == 5
    few = daemon.call("conversations/list", {"query": "walrus number 7", "limit": 5})
    # the last word matches as a prefix: 7, 70-79 and 700-799
    assert (few["total"], few["total_exact"]) == (1 + 10 + 100, True)
    # A word that alone matches more than the cap is matched whole: the newest
    # conversation, which has only a longer word, is not on its first page.
    newest = send(daemon, "[[reply:ok]] walruses galore")["conversation_id"]
    whole = daemon.call("conversations/list", {"query": "walrus", "limit": 5})
    assert newest not in [c["id"] for c in whole["conversations"]]
    typed = daemon.call("conversations/list", {"query": "walruse", "limit": 5})
    assert [c["id"] for c in typed["conversations"]] == [newest]


def _ids(d: Daemon, query: str) -> list[str]:
    """The ids a search lists, in its order, after checking its total is exact."""
    found = d.call("conversations/list", {"query": query, "limit": 50})
    assert found["total_exact"] and found["total"] == len(found["conversations"])
    return [c["id"] for c in found["conversations"]]


def test_short_prefixes_find_what_longer_ones_do_newest_first(daemon: Daemon) -> None:
    """A one-, two- or three-letter last word (read from the prefix index) lists the
    conversations with a word that starts so, accents folded, most recent match first,
    as a four-letter one (read as the words it starts) does."""
    apple = send(daemon, "[[reply:noted]] Apple pie")["conversation_id"]
    bread = send(daemon, "[[reply:noted]] bread rolls")["conversation_id"]
    eclair = send(daemon, "[[reply:noted]] Éclair recipe")["conversation_id"]
    soup = send(daemon, "[[reply:noted]] lentil soup")["conversation_id"]
    avocado = send(daemon, "[[reply:noted]] avocado on toast")["conversation_id"]
    send(daemon, "[[reply:noted]] apricot glaze", apple)  # now apple's match is the newest
    assert _ids(daemon, "a") == _ids(daemon, "A") == [apple, avocado]
    assert _ids(daemon, "ap") == _ids(daemon, "apr") == _ids(daemon, "apri") == [apple]
    assert _ids(daemon, "e") == _ids(daemon, "é") == _ids(daemon, "ecla") == [eclair]
    # "reply" is in every user message: each conversation by its latest one
    assert _ids(daemon, "r") == [apple, avocado, soup, eclair, bread]
    assert _ids(daemon, "bread r") == [bread]  # the other words whole, in the same text
    assert _ids(daemon, "bread.rol") == [bread]  # two words in one: a phrase
    assert _ids(daemon, "x") == []


def test_long_prefixes_find_the_words_of_every_write(
    daemon: Daemon, sql: sqlite3.Connection
) -> None:
    """A last word of four letters or more is read as the words it starts, from the
    store's list of words: those of a question, an answer, a new title and a fork's copy
    are all in it, case and accents folded, and found most recent match first."""
    first = send(daemon, "[[reply:Quixotic answer]] zeppelin Hangar")["conversation_id"]
    second = send(daemon, "[[reply:noted]] zeppelins over Zürich")["conversation_id"]
    assert _ids(daemon, "zepp") == _ids(daemon, "ZEPPE") == [second, first]
    assert _ids(daemon, "hang") == _ids(daemon, "quixo") == [first]
    assert _ids(daemon, "zuri") == _ids(daemon, "ZÜRI") == [second]
    daemon.call("conversations/rename", {"id": first, "title": "Dirigible notes"})
    assert _ids(daemon, "dirig") == [first]
    fork = daemon.call("conversations/fork", {"id": first})["id"]
    assert _ids(daemon, "hanga") == [fork, first]
    assert _ids(daemon, "zeppelin hang") == [fork, first]  # whole words, then the prefix
    assert _ids(daemon, "zeppelinx") == _ids(daemon, "over zepx") == []
    terms = {t for (t,) in sql.execute("SELECT term FROM search_terms")}
    assert {"zeppelin", "zeppelins", "hangar", "quixotic", "zurich", "dirigible"} <= terms
    # The newest conversation deleted, the next message's search rows take its rowids:
    # their words are listed all the same.
    daemon.call("conversations/delete", {"id": fork})
    third = send(daemon, "[[reply:noted]] marzipan figures")["conversation_id"]
    assert _ids(daemon, "marzi") == [third]


def test_a_long_prefix_is_searched_when_its_words_cannot_be_listed(
    daemon: Daemon, sql: sqlite3.Connection
) -> None:
    """When listing the new rows' words fails (a real trigger refuses it, as a full disk
    would), a long prefix is still searched, by FTS5's own prefix query, and the
    failure is logged."""
    cid = send(daemon, "[[reply:noted]] quokka sightings")["conversation_id"]
    sql.execute(
        "CREATE TRIGGER refuse_listing BEFORE UPDATE ON search_terms_upto"
        " BEGIN SELECT RAISE(ABORT, 'listing refused'); END"
    )
    assert _ids(daemon, "quokk") == [cid]
    assert "cannot list the new words for search: listing refused" in daemon.stderr()
    sql.execute("DROP TRIGGER refuse_listing")
    assert _ids(daemon, "quokk") == [cid]  # listed now
    assert sql.execute("SELECT COUNT(*) FROM search_terms WHERE term='quokka'").fetchone()[0]


def test_a_prefix_of_many_words_finds_them_all(daemon: Daemon) -> None:
    """A long prefix that starts more words than are read as one OR (64) is still a
    search, by FTS5's own prefix query: every conversation with one of them is found,
    the one holding only the words past the 64th too."""
    words = [f"wxyz{i:03d}" for i in range(70)]
    a = send(daemon, "[[reply:ok]] " + " ".join(words[:64]))["conversation_id"]
    b = send(daemon, "[[reply:ok]] " + " ".join(words[64:]))["conversation_id"]
    assert _ids(daemon, "wxyz") == _ids(daemon, "WXYZ0") == [b, a]
    assert _ids(daemon, "wxyz00") == [a]  # 10 words
    assert _ids(daemon, "wxyz06") == [b, a]  # 060-063 in a, 064-069 in b


def test_search_migration_keeps_every_row_and_indexes_prefixes(make_daemon: Any) -> None:
    """A store at schema version 3 (made by the real migrations 1-3) is brought to the
    current version with every search row kept, rowids too, and every word listed, so
    every conversation is found by a whole word, by a one-letter prefix and by a longer
    one, most recent match first."""
    from assistantd.store import MIGRATIONS

    path = db_path()
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path, isolation_level=None)
    for n, script in enumerate(MIGRATIONS[:3], 1):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version={n}; COMMIT;")
    convs = {
        "c1": "Apple pie",
        "c2": "banana bread",
        "c3": "Éclair recipe",
        "c4": "bread rolls",
    }
    texts = [  # in the order they were written: the rowids of the search table
        ("c1", "Apple pie"),
        ("c1", "how long to bake"),
        ("c2", "banana bread"),
        ("c2", "ripe bananas only"),
        ("c3", "Éclair recipe"),
        ("c4", "bread rolls"),
        ("c4", "avocado on toast"),
        ("c1", "Apricot glaze"),
    ]
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO conversations(id, title, created_at, updated_at)"
        " VALUES (?, ?, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
        convs.items(),
    )
    db.executemany(
        "INSERT INTO messages(id, conversation_id, seq, role, content, created_at)"
        " VALUES (?, ?, ?, 'user', ?, '2024-01-01T00:00:00Z')",
        [(f"m{i}", cid, i, text) for i, (cid, text) in enumerate(texts)],
    )
    db.executemany("INSERT INTO search(conversation_id, text) VALUES (?, ?)", texts)
    db.execute("COMMIT")
    before = db.execute("SELECT rowid, conversation_id, text FROM search").fetchall()
    db.close()

    d: Daemon = make_daemon("")
    # Queued behind the migrations, so they are done when it answers. Apricot is newest,
    # then avocado; c1's apple is older.
    assert _ids(d, "a") == ["c1", "c4"]
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("SELECT rowid, conversation_id, text FROM search").fetchall() == before
        (table,) = db.execute("SELECT sql FROM sqlite_master WHERE name='search'").fetchone()
        assert "prefix='1 2 3'" in table
    finally:
        db.close()
    assert "schema version 4" in d.stderr() and "schema version 5" in d.stderr()
    assert _ids(d, "bana") == ["c2"] and _ids(d, "AVOC") == ["c4"]
    assert _ids(d, "ÉCLAI") == ["c3"] and _ids(d, "apric") == ["c1"]
    assert _ids(d, "b") == ["c4", "c2", "c1"]
    assert _ids(d, "e") == ["c3"]
    assert _ids(d, "r") == ["c4", "c3", "c2"]
    assert _ids(d, "bread r") == ["c4"]
    for cid, title in convs.items():  # each by a whole word of its title
        assert cid in _ids(d, title.split()[-1])


def test_status_answers_while_an_older_store_is_upgraded(make_daemon: Any) -> None:
    """A daemon that opens an older store answers daemon/status while the store's
    migration still runs (the file is still at the old version then), and a search asked
    meanwhile waits for the migration and finds what it should."""
    from assistantd.store import MIGRATIONS

    path = db_path()
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path, isolation_level=None)
    for n, script in enumerate(MIGRATIONS[:3], 1):
        db.executescript(f"BEGIN; {script}; PRAGMA user_version={n}; COMMIT;")
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO conversations(id, title, created_at, updated_at)"
        " VALUES ('old', 'zebra crossing', '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')"
    )
    words = " ".join(f"w{i}" for i in range(40))
    db.executemany(  # enough rows that rebuilding the index takes seconds
        "INSERT INTO search(conversation_id, text) VALUES ('old', ?)",
        ((f"{words} {i}",) for i in range(150_000)),
    )
    db.execute("INSERT INTO search(conversation_id, text) VALUES ('old', 'zebra crossing')")
    db.execute("COMMIT")
    db.close()

    d: Daemon = make_daemon("", wait=False)
    status = None
    while status is None:
        assert d.proc.poll() is None, d.stderr()
        try:
            status = d.call("daemon/status")
        except Exception:
            time.sleep(0.01)
    reader = sqlite3.connect(path)
    try:  # the migration's transaction is not committed yet: the old version shows
        assert reader.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        reader.close()
    assert status["pid"] == d.proc.pid
    assert _ids(d, "z") == ["old"]  # waits for the migration, then uses the prefix index
    assert "schema version 4" in d.stderr()


# -- the list cursor ------------------------------------------------------------------------


def test_list_pages_by_cursor(daemon: Daemon) -> None:
    """Following `next` through `before` walks every conversation once, newest first, in
    the order offset paging gives, and the last page has no `next`."""
    made = [send(daemon, f"[[reply:ok]] number {i}")["conversation_id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["before"] = cursor
        page = daemon.call("conversations/list", params)
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    by_offset = [
        c["id"]
        for off in (0, 3, 6)
        for c in daemon.call("conversations/list", {"limit": 3, "offset": off})["conversations"]
    ]
    assert by_offset == seen


def test_bad_cursor_is_invalid_params(daemon: Daemon) -> None:
    """A `before` that is not a cursor, or one given with a query, is -32602."""
    for params in ({"before": "nonsense"}, {"before": "2024-01-01T00:00:00Z~c1", "query": "x"}):
        with pytest.raises(RpcError) as e:
            daemon.call("conversations/list", params)
        assert e.value.code == -32602
        assert e.value.data["reason"] == "bad_cursor"


@pytest.mark.parametrize(
    "lock",
    [
        ("XDG_RUNTIME_DIR", "assistantd", "assistantd.sock.lock"),  # one daemon per socket
        ("XDG_DATA_HOME", "assistantd", "assistantd.lock"),  # one daemon per data folder
    ],
    ids=["socket", "data"],
)
def test_lock_file_symlink_is_not_followed(tmp_path: Path, lock: tuple[str, str, str]) -> None:
    """A symbolic link planted at either lock file's path makes the daemon refuse to start
    with one line, and the file it points to is left untouched."""
    var, folder_name, name = lock
    folder = Path(os.environ[var]) / folder_name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    (folder / name).symlink_to(target)
    proc = subprocess.run(
        [sys.executable, "-m", "assistantd", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "symbolic link" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert target.read_text() == "precious\n"
