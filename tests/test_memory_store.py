"""Memory store: chunker, path validation, decay, spaces, search, reindex, restart, two processes.

Everything that touches the index runs on the test run's engine (SQLite FTS5, or PostgreSQL in the
PostgreSQL pass: `memory_engine`).
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from starpod.config import MemoryConfig
from starpod.dbcopy import migrate_url
from starpod.errors import StarpodError
from starpod.memory import MemoryStore, chunk_text, index
from starpod.memory.paths import MAX_CONTENT_BYTES, locate, validate_name
from starpod.memory.pgindex import MAX_INDEXED_CHARS, SEARCH_CONFIG, TOAST_TUPLE_TARGET, PostgresIndex, tokenize
from starpod.memory.scoring import apply_decay, decay_factor, fts_query
from starpod.memory import pgindex, pgtsvector
from starpod.memory import store as store_module
from starpod.memory.store import cap_bytes

from .memory_engines import memory_engine  # noqa: F401  (the engine fixture)
from .support import wait_until


def open_store(home, engine, **settings) -> MemoryStore:
    config = MemoryConfig(**settings)
    store = MemoryStore(home, lambda: config, engine.url_for(home))
    store.open()
    return store


@pytest.fixture
def store(tmp_path, memory_engine):
    store = open_store(tmp_path / ".starpod", memory_engine)
    yield store
    store.close()


def sources(hits):
    return [h.path for h in hits]


# --- chunker (§1.5) ---------------------------------------------------------------------------

def test_chunker_worked_example_twenty_long_lines():
    text = "\n".join(f"{i:02d}" + "x" * 198 for i in range(20))
    spans = [(c.line_start, c.line_end) for c in chunk_text(text, 1600, 320)]
    assert spans == [(1, 8), (7, 14), (13, 20), (19, 20)]


def test_chunker_three_short_lines_and_empty():
    chunks = chunk_text("a\nb\nc\n")
    assert [(c.text, c.line_start, c.line_end) for c in chunks] == [("a\nb\nc", 1, 3)]
    assert chunk_text("") == []


def test_chunker_strips_cr_skips_blank_chunks_and_counts_bytes():
    assert chunk_text("a\r\nb\r\n")[0].text == "a\nb"
    # Whitespace-only chunks are skipped but still advance.
    text = "\n".join([" " * 50] * 4 + ["word"])
    assert [(c.line_start, c.line_end) for c in chunk_text(text, 100, 0)] == [(4, 5), (5, 5)]
    # Two-byte characters: 60 chars = 120 bytes + newline fill a 100-byte chunk with one line.
    assert [(c.line_start, c.line_end) for c in chunk_text("é" * 60 + "\n" + "é" * 60, 100, 0)] == [(1, 1), (2, 2)]


def test_chunker_custom_sizes_overlap_and_zero_size():
    text = "\n".join(f"line {i} " + "y" * 40 for i in range(40))
    small, default = chunk_text(text, 200, 50), chunk_text(text)
    assert len(small) > len(default)
    for prev, nxt in zip(small, small[1:]):
        assert nxt.text.split("\n")[0] in prev.text
        assert nxt.line_start <= prev.line_end  # at least one line of overlap
    assert len(chunk_text("a\nb\nc", 0, 0)) == 3  # size 0 still terminates


# --- path validation (§1.2) --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["notes.md", "subdir/notes.md", ".hidden.md", "a" * 252 + ".md"])
def test_valid_names(name):
    validate_name(name)


@pytest.mark.parametrize("name, message", [
    ("", "File name cannot be empty"),
    ("a" * 254 + ".md", "File name exceeds 255 characters"),
    ("../escape.md", "File name must not contain '..'"),
    ("a..md", "File name must not contain '..'"),
    ("memory/../../../etc/passwd.md", "File name must not contain '..'"),
    ("/tmp/evil.md", "File name must be a relative path"),
    ("script.sh", "Only .md files are allowed"),
    ("notes.md.bak", "Only .md files are allowed"),
    ("NOTES.MD", "Only .md files are allowed"),
    ("secret.json", "Only .md files are allowed"),
])
def test_invalid_names(name, message):
    with pytest.raises(StarpodError) as err:
        validate_name(name)
    assert err.value.message == message


def test_symlink_escape_and_foreign_space_are_rejected(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.home / "link").symlink_to(outside)
    for name, user in (("link/evil.md", None), ("users/bob/USER.md", "alice"), ("users/bob/x.md", None),
                       ("db/x.md", None), ("instances/x/.starpod/SOUL.md", None)):
        with pytest.raises(StarpodError):
            store.write(name, "x", user)
    with pytest.raises(StarpodError) as err:
        store.read("link/evil.md")
    assert err.value.message == "File path escapes the data directory"
    assert not (outside / "evil.md").exists()


def test_content_size_limit(store):
    store.write("big.md", "a" * MAX_CONTENT_BYTES)
    with pytest.raises(StarpodError) as err:
        store.write("big.md", "a" * (MAX_CONTENT_BYTES + 1))
    assert err.value.message == "Content size (1048577 bytes) exceeds maximum (1048576 bytes)"
    assert err.value.status == 413


def test_routing(store):
    home = store.home
    assert locate(home, "SOUL.md", "u1").path == home / "config" / "SOUL.md"
    assert locate(home, "USER.md", "u1").path == home / "users" / "u1" / "USER.md"
    assert locate(home, "memory/x.md", "u1").path == home / "users" / "u1" / "memory" / "x.md"
    assert locate(home, "USER.md", None).path == home / "USER.md"
    assert locate(home, "users/u1/notes.md", "u1").source == "users/u1/notes.md"
    assert locate(home, "./sub//n.md", None).source == "sub/n.md"
    store.write("notes.md", "runtime file")
    assert (home / "notes.md").read_text() == "runtime file"
    assert not (home / "config" / "notes.md").exists()


# --- decay (§1.7) ------------------------------------------------------------------------------

def test_decay_factors():
    today = date(2025, 6, 30)
    day = lambda n: f"memory/{today - timedelta(days=n):%Y-%m-%d}.md"  # noqa: E731
    for name in ("SOUL.md", "USER.md", "MEMORY.md", "HEARTBEAT.md", "users/u1/USER.md"):
        assert decay_factor(name, 30, today) == 1.0
    for name in ("notes.md", "BOOT.md", "memory/notes.md", "memory/not-a-date.md", "memory/2026-13-45.md",
                 "knowledge/x.md"):
        assert decay_factor(name, 30, today) == 0.8
    assert decay_factor(day(0), 30, today) == 1.0
    assert decay_factor(day(30), 30, today) == pytest.approx(0.5)
    assert decay_factor(day(60), 30, today) == pytest.approx(0.25)
    assert decay_factor("users/u1/" + day(60), 30, today) == pytest.approx(0.25)
    assert decay_factor(day(7), 7, today) == pytest.approx(0.5)
    assert decay_factor(day(365), 30, today) < 0.01
    assert decay_factor(day(-3), 30, today) >= 1.0
    assert decay_factor(day(30), 0, today) == pytest.approx(0.5)  # invalid half-life → default 30
    assert apply_decay(-10.0, 0.5) == pytest.approx(-5.0)
    assert apply_decay(-10.0, 1.0) == -10.0
    assert apply_decay(-10.0, 0.0) == -10.0


def test_search_prefers_recent_daily_log(store):
    old = date.today() - timedelta(days=90)
    store.write(f"memory/{old:%Y-%m-%d}.md", "the zebra migration notes")
    store.write(f"memory/{date.today():%Y-%m-%d}.md", "the zebra migration notes")
    hits = store.search("zebra migration", None)
    assert sources(hits) == [f"memory/{date.today():%Y-%m-%d}.md", f"memory/{old:%Y-%m-%d}.md"]
    assert hits[0].score > hits[1].score


def test_cached_search_results_follow_writes_of_other_processes(store, memory_engine, monkeypatch):
    """Results are cached per process, but whatever another worker (another store over the same
    index) writes, removes or reindexes shows in the next search."""
    store.write("notes/a.md", "the okapi grazes")
    assert sources(store.search("okapi", None)) == ["notes/a.md"]
    with monkeypatch.context() as patch:  # the index did not change: the cached result is served
        patch.setattr(store, "_search", lambda *args: pytest.fail("searched again"))
        first = store.search("okapi", None)
        first.clear()  # a caller's copy: the cached result stays whole
        assert store.search("okapi", None) == store.search("okapi", None) != []
    assert len(store._results) == 1
    other = MemoryStore(store.home, MemoryConfig, memory_engine.url_for(store.home))
    try:
        other.write("notes/b.md", "an okapi and another okapi")
        assert sorted(sources(store.search("okapi", None))) == ["notes/a.md", "notes/b.md"]
        (store.home / "notes" / "a.md").unlink()
        other.reindex()
        assert sources(store.search("okapi", None)) == ["notes/b.md"]
        other.write("notes/b.md", "no more of them")
        assert store.search("okapi", None) == []
        (store.home / "notes" / "c.md").write_text("an okapi by hand")
        other.reindex(full=True)  # on PostgreSQL: new tables swapped in
        assert sources(store.search("okapi", None)) == ["notes/c.md"]
    finally:
        other.close()
    assert store.search("okapi", None, limit=0) == []


# --- store behaviour ---------------------------------------------------------------------------

def test_seeding_and_bootstrap(store, memory_engine):
    config_dir = store.home / "config"
    for name in ("SOUL.md", "HEARTBEAT.md", "BOOT.md", "BOOTSTRAP.md"):
        assert (config_dir / name).is_file()
    assert not (config_dir / "USER.md").exists()
    assert (store.home / "db" / "memory.db").is_file() == (memory_engine.name == "sqlite")
    context = store.bootstrap_context(None)
    assert context.startswith("--- SOUL.md ---\n") and "Aster" in context and "USER.md" not in context
    assert not store.has_bootstrap()
    store.write("BOOTSTRAP.md", "first run steps")
    assert store.has_bootstrap()
    store.clear_bootstrap()
    assert not store.has_bootstrap() and (config_dir / "BOOTSTRAP.md").read_text() == ""


def test_user_space_bootstrap_and_daily_logs(store):
    store.write("USER.md", "Name: Alice", "alice")
    for day in ("2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04"):
        store.write(f"memory/{day}.md", f"log {day}", "alice")
    context = store.bootstrap_context("alice")
    parts = [line for line in context.split("\n") if line.startswith("--- ")]
    assert parts == ["--- SOUL.md ---", "--- USER.md ---", "--- MEMORY.md ---", "--- daily/2025-01-04.md ---",
                     "--- daily/2025-01-03.md ---", "--- daily/2025-01-02.md ---"]
    assert "Name: Alice" in context and "# Memory Index" in context
    assert "Name: Alice" not in store.bootstrap_context("bob")
    bob = store.home / "users" / "bob"
    assert (bob / "USER.md").read_text().startswith("# User Profile")
    assert (bob / "MEMORY.md").read_text() == "# Memory Index\n\nImportant facts and links to memory files.\n"


def age(path, seconds=60):
    """Backdate a file's mtime out of the racy window, as if written a while ago."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def test_bootstrap_sees_changes_made_by_other_processes(store):
    user_md = store.home / "users" / "alice" / "USER.md"
    store.write("USER.md", "Name: Alice", "alice")
    age(user_md)
    assert "Name: Alice" in store.bootstrap_context("alice")
    cap = store.settings().bootstrap_file_cap
    assert store.texts.cached(("USER.md", "alice", cap)) == "Name: Alice"  # served from the cache now
    user_md.write_text("Name: Alyce")  # in place, same size, as another worker might
    age(user_md, 30)
    assert "Name: Alyce" in store.bootstrap_context("alice")
    replacement = user_md.with_name("new.tmp")
    replacement.write_text("Name: Ally")
    age(replacement)
    os.replace(replacement, user_md)  # atomic replace
    assert "Name: Ally" in store.bootstrap_context("alice")
    user_md.unlink()
    assert "# User Profile" in store.bootstrap_context("alice")  # recreated from the default


def test_bootstrap_cap_is_byte_and_char_safe(tmp_path, memory_engine):
    store = open_store(tmp_path / "h", memory_engine, bootstrap_file_cap=500)
    store.write("SOUL.md", "é" * 5000)
    soul = store.bootstrap_context(None).split("\n", 1)[1]
    assert len(soul.encode()) <= 500 and set(soul) == {"é"}
    # Only the start of a long file is read: cut as the whole text would be, whatever it holds.
    daily = store.user_dir("bo") / "memory" / "2024-01-02.md"
    daily.write_bytes((b"a\r\nb\xff\xfe " + "é👋 ".encode()) * 100)
    section = store.bootstrap_context("bo").split("--- daily/2024-01-02.md ---\n")[1]
    assert section == cap_bytes(daily.read_text(encoding="utf-8", errors="replace"), 500) != ""
    assert cap_bytes("café", 4) == "caf"
    assert [cap_bytes("hi 👋", n) for n in (4, 5, 6)] == ["hi ", "hi ", "hi "]
    store.close()


def test_append_daily_format_and_index(store):
    store.append_daily("first kiwi entry", None)
    store.append_daily("second kiwi entry", None)
    today = datetime.now().strftime("%Y-%m-%d")
    text = store.read(f"memory/{today}.md")
    assert text.startswith(f"# Daily Log \u2014 {today}\n\n## ")
    assert text.count("\n## ") == 2 and "first kiwi entry\n" in text and text.endswith("second kiwi entry\n")
    store.append_daily("private mango", "alice")
    assert "private mango" in (store.home / "users" / "alice" / "memory" / f"{today}.md").read_text()
    assert sources(store.search("mango", "alice")) == [f"users/alice/memory/{today}.md"]
    assert sources(store.search("kiwi", "alice")) == [f"memory/{today}.md"]


def test_daily_log_indexed_soon_takes_every_append_in_one_round(store, monkeypatch):
    """Under gevent, `index_soon=True` appends are indexed by one background round a moment later,
    which takes in whatever was appended until it ran; appends after it start another round."""
    rounds = []
    monkeypatch.setattr(store_module, "gevent_active", lambda: True)
    monkeypatch.setattr(store_module, "in_background", lambda delay, fn, *args: rounds.append((delay, fn, args)))
    store.append_daily("early wombat", "alice", index_soon=True)
    store.append_daily("late wombat", "alice", index_soon=True)
    assert len(rounds) == 1 and rounds[0][0] == store_module.INDEX_SOON_SECS
    assert store.search("wombat", "alice") == []
    delay, index, args = rounds.pop()
    index(*args)
    assert [hit.text.count("wombat") for hit in store.search("wombat", "alice")] == [2]
    store.append_daily("third wombat", "alice", index_soon=True)
    assert len(rounds) == 1
    rounds[0][1](*rounds[0][2])
    assert [hit.text.count("wombat") for hit in store.search("wombat", "alice")] == [3]


def indexed_chunks(store, source):
    with store.index.connection() as conn:
        return conn.execute("SELECT rowid, chunk_text, line_start, line_end FROM memory_fts WHERE source = ? "
                            "ORDER BY rowid", (source,)).fetchall()


@pytest.mark.parametrize("size, overlap", [(200, 50), (60, 0), (1, 0), (1600, 320)])
def test_appends_index_exactly_what_a_full_rebuild_would(tmp_path, memory_engine, size, overlap):
    store = open_store(tmp_path / ".starpod", memory_engine, chunk_size=size, chunk_overlap=overlap)
    today = datetime.now().strftime("%Y-%m-%d")
    source = f"memory/{today}.md"
    for i in range(40):
        store.append_daily(("\n" * (i % 3)) + f"entry {i} " + "é" * (i * 7 % 50), None)
        appended = indexed_chunks(store, source)
        base = appended[0][0] >> 32 << 32
        expected = [(base + n, c.text, c.line_start, c.line_end)
                    for n, c in enumerate(chunk_text(store.read(source), size, overlap))]
        assert appended == expected
    store.close()


def test_edited_file_is_rechunked_whole(store):
    store.write("notes.md", "alpha\n")
    store.write("notes.md", "beta\ngamma\n")  # not a growth of the indexed text
    assert [row[1] for row in indexed_chunks(store, "notes.md")] == ["beta\ngamma"]
    assert sources(store.search("alpha", None)) == []


@pytest.mark.parametrize("query, expected", [
    ("user's guide", True), ("foo-bar", True), ('"unbalanced', True), ("AND", False), ("NOT zebra", False),
    ("hello!", True), ("a.md", False), ("source:x", False), ("crème brûlée", True), ("creme", True),
    ("東京", True), ("running", True), ("*", False), ('"', False),
])
def test_plain_text_queries_never_fail(store, query, expected):
    store.write("q.md", "The user's guide to foo-bar says hello! About \"unbalanced quotes. "
                        "Crème brûlée in 東京 while the dog runs.")
    assert ("q.md" in sources(store.search(query, None))) is expected


def test_fts_query_quotes_every_term():
    assert fts_query('a "b" c*') == '"a" """b""" "c*"'
    assert fts_query("   ") == ""


def test_private_space_isolation(store):
    store.write("MEMORY.md", "alice secret: pomegranate", "alice")
    store.write("users/alice/notes/deep.md", "pomegranate orchard plans", "alice")
    store.write("knowledge/fruit.md", "shared pomegranate facts")
    assert sorted(sources(store.search("pomegranate", "alice"))) == [
        "knowledge/fruit.md", "users/alice/MEMORY.md", "users/alice/notes/deep.md"]
    assert sources(store.search("pomegranate", "bob")) == ["knowledge/fruit.md"]
    assert sources(store.search("pomegranate", None)) == ["knowledge/fruit.md"]
    with pytest.raises(StarpodError):
        store.read("users/alice/MEMORY.md", "bob")
    assert store.read("MEMORY.md", "bob").startswith("# Memory Index")
    # Still isolated after a full rebuild from disk.
    store.reindex(full=True)
    assert sources(store.search("pomegranate", "bob")) == ["knowledge/fruit.md"]
    assert len(store.search("pomegranate", "alice")) == 3


def test_reindex_picks_up_hand_edits_deletions_and_renames(store):
    home = store.home
    (home / "dropped.md").write_text("walrus by hand")
    (home / "knowledge" / "deep" / "er").mkdir(parents=True)
    (home / "knowledge" / "deep" / "er" / "nested.md").write_text("nested narwhal")
    (home / "users" / "alice").mkdir(parents=True)
    (home / "users" / "alice" / "hand.md").write_text("alice walrus")
    (home / "users" / "loose.md").write_text("walrus without owner")
    (home / "db" / "hidden.md").write_text("walrus in db")
    (home / "instances" / "i1" / ".starpod").mkdir(parents=True)
    (home / "instances" / "i1" / ".starpod" / "other.md").write_text("walrus of another agent")
    (home / "notes.txt").write_text("walrus text file")
    store.write("edit.md", "old octopus")
    assert store.search("walrus", None) == []
    stats = store.reindex()
    assert stats["indexed"] >= 3 and stats["removed"] == 0
    assert sources(store.search("walrus", None)) == ["dropped.md"]
    assert sorted(sources(store.search("walrus", "alice"))) == ["dropped.md", "users/alice/hand.md"]
    assert sources(store.search("narwhal", None)) == ["knowledge/deep/er/nested.md"]

    # Same size, same mtime: only the content hash can tell.
    st = os.stat(home / "edit.md")
    (home / "edit.md").write_text("new octopu")
    (home / "edit.md").write_text("new squidy")
    os.utime(home / "edit.md", ns=(st.st_atime_ns, st.st_mtime_ns))
    (home / "dropped.md").unlink()
    (home / "knowledge" / "deep" / "er" / "nested.md").rename(home / "knowledge" / "moved.md")
    stats = store.reindex()
    assert stats["removed"] == 2
    assert store.search("walrus", None) == []
    assert sources(store.search("narwhal", None)) == ["knowledge/moved.md"]
    assert store.search("octopus", None) == [] and sources(store.search("squidy", None)) == ["edit.md"]


def test_restart_keeps_everything_searchable_and_skips_unchanged(tmp_path, memory_engine):
    home = tmp_path / "h"
    store = open_store(home, memory_engine)
    store.write("knowledge/a.md", "persistent platypus")
    store.append_daily("daily platypus", "alice")
    store.close()
    old = datetime.now().timestamp() - 3600
    for path in home.rglob("*.md"):
        os.utime(path, (old, old))
    store = open_store(home, memory_engine)  # reindexes: the new mtimes are re-hashed once
    again = MemoryStore(home, MemoryConfig, memory_engine.url_for(home))
    again.index.open()
    stats = again.reindex()
    assert stats["indexed"] == 0 and stats["unchanged"] == stats["files"] >= 6
    assert len(again.search("platypus", "alice")) == 2
    assert sources(again.search("platypus", None)) == ["knowledge/a.md"]
    store.close()
    again.close()


def test_changed_chunk_settings_rebuild_index(tmp_path, memory_engine):
    home = tmp_path / "h"
    settings = {"value": MemoryConfig()}
    store = MemoryStore(home, lambda: settings["value"], memory_engine.url_for(home))
    store.open()
    store.write("long.md", "\n".join(f"line {i} lemur " + "z" * 60 for i in range(100)))
    before = len(store.search("lemur", None, 100))
    settings["value"] = MemoryConfig(chunk_size=200, chunk_overlap=40)
    stats = store.reindex()
    assert stats["indexed"] == stats["files"]
    assert len(store.search("lemur", None, 100)) > before
    store.close()


def test_export_session(store):
    name = store.export_session("Trip: Paris & Rome!", "2025-03-04T10:00:00.000000Z", "main", 2, "Planning",
                                [("user", "Where to eat?"), {"role": "assistant", "content": "Try bistros."},
                                 ("tool", "ignored")], "abcdef123456", "Aster", user_id="alice")
    assert name == "users/alice/knowledge/sessions/trip--paris---rome-abcdef12.md"
    text = (store.home / name).read_text()
    assert text.startswith("# Session: Trip: Paris & Rome!\n")
    assert "- **Date**: 2025-03-04" in text and "**User**: Where to eat?" in text
    assert "**Aster**: Try bistros." in text and "ignored" not in text
    assert sources(store.search("bistros", "alice")) == [name]
    assert store.search("bistros", "bob") == []
    shared = store.export_session(None, "2025-03-04", "main", 0, None, [], "12345678", "Aster")
    assert shared == "knowledge/sessions/untitled-12345678.md"


def test_export_disabled(tmp_path, memory_engine):
    store = open_store(tmp_path / "h", memory_engine, export_sessions=False)
    assert store.export_session("t", "2025-01-01", "main", 0, None, [], "id", "Aster") is None
    store.close()


# --- two processes writing at once -----------------------------------------------------------

def _writer(home: str, database_url: str | None, worker: int, count: int) -> None:
    store = MemoryStore(home, MemoryConfig, database_url)
    store.index.open()
    for i in range(count):
        store.write(f"shared/w{worker}-{i}.md", f"concurrent capybara w{worker}x{i}")
        store.write("contended.md", f"contended capybara from w{worker}x{i}")
        store.append_daily(f"tick w{worker}x{i}", "alice")
    store.reindex()
    store.close()


def test_concurrent_writes_from_two_processes(tmp_path, memory_engine):
    home = tmp_path / "h"
    open_store(home, memory_engine).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(home), memory_engine.url_for(home), w, 30)) for w in (1, 2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    store = open_store(home, memory_engine)
    hits = store.search("capybara", None, 100)
    assert len([h for h in hits if h.path.startswith("shared/")]) == 60
    contended = [h for h in hits if h.path == "contended.md"]
    assert len(contended) == 1 and contended[0].text == (home / "contended.md").read_text()
    today = datetime.now().strftime("%Y-%m-%d")
    log = (home / "users" / "alice" / "memory" / f"{today}.md").read_text()
    assert log.count("# Daily Log") == 1 and log.count("\n## ") == 60
    daily = store.search("tick", "alice", 100)
    assert {h.path for h in daily} == {f"users/alice/memory/{today}.md"}
    assert max(h.line_end for h in daily) == len(log.splitlines())
    store.close()


def test_bad_text_and_directory_clashes_are_clean_errors(store):
    store.write("knowledge.md", "a file")
    (store.home / "dir.md").mkdir()
    attempts = [
        (lambda: store.write("a\x00.md", "x"), "File name contains invalid characters"),
        (lambda: store.write("\ud800.md", "x"), "File name contains invalid characters"),
        (lambda: store.write("ok.md", "\ud800"), "Content is not valid UTF-8 text"),
        (lambda: store.read("dir.md"), "File path is not usable: Is a directory"),
        (lambda: store.write("dir.md", "x"), "File path is not usable: Is a directory"),
        (lambda: store.write("knowledge.md/x.md", "x"), "File path is not usable: File exists"),
    ]
    for attempt, message in attempts:
        with pytest.raises(StarpodError) as err:
            attempt()
        assert err.value.message == message and err.value.status == 400
    assert store.search("\ud800", None) == []
    assert sources(store.search("file\x00", None)) == ["knowledge.md"]


# --- what both engines must agree on, and the PostgreSQL engine's own pieces ---------------------

def test_stemming_and_no_stop_words_on_both_engines(store):
    store.write("stems.md", "Connections were failing between the servers.")
    for query in ("connecting", "connected servers", "fail", "server", "the", "between the"):
        assert "stems.md" in sources(store.search(query, None)), query
    assert store.search("servants", None) == []


def test_hand_written_nul_bytes_are_indexed_on_both_engines(store):
    (store.home / "nul.md").write_bytes(b"before\x00after walrus\n")
    assert store.reindex()["indexed"] == 1
    [hit] = store.search("walrus", None)
    assert hit.path == "nul.md" and hit.text.startswith("before") and hit.text.endswith("after walrus")


def test_ranking_prefers_denser_matches_on_both_engines(store):
    store.write("dense.md", "okapi okapi okapi notes about the okapi")
    store.write("sparse.md", "okapi " + " ".join(f"filler{i}" for i in range(300)))
    hits = store.search("okapi", None)
    assert sources(hits) == ["dense.md", "sparse.md"] and hits[0].score > hits[1].score > 0


def test_a_broad_query_ranks_only_the_rank_cap_most_recently_changed_matches(store, monkeypatch):
    for number in range(5):
        store.write(f"wombat{number}.md", f"wombat note {number}")
    monkeypatch.setattr(index, "RANK_CAP", 3)
    assert sorted(sources(store.search("wombat", None))) == ["wombat2.md", "wombat3.md", "wombat4.md"]
    store.write("wombat0.md", "wombat note 0, changed")
    assert sorted(sources(store.search("wombat", None))) == ["wombat0.md", "wombat3.md", "wombat4.md"]


def test_postgresql_tables_and_gin_index(store, memory_engine):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    indexes = memory_engine.query(store.home, "SELECT indexdef FROM pg_indexes WHERE tablename = 'memory_fts'")
    assert any("USING gin (tsv)" in row[0] for row in indexes)
    store.write("gin.md", "tapir")
    [(vector,)] = memory_engine.query(store.home, "SELECT tsv::text FROM memory_fts WHERE source = 'gin.md'")
    assert vector == "'1':4,5 'gin':1 'md':2 'tapir':3"


TRICKY_TEXTS = [
    "Crème BRÛLÉE 東京 naïve_x ça ǅ ß ﬁ İstanbul ΣΑΣ x² ½ ٣٤ ① 𝟘𝟙 1e10abc abc1e10 0x1f 1.5e3 v1.2.3",
    "okapi " * 300 + "tapir",                                   # a lexeme at more positions than kept
    " ".join(f"w{n % 300}" for n in range(17_000)),            # positions past the last one
    "x" * 2047 + " long " + "y" * 2048 + " words " + "z" * 5000,  # words too long to index
    "running runs ran run-time 007 42 " + "9" * 2047 + " " + "8" * 2048,  # numbers, one too long
    " ".join(f"k{n % 5000}" for n in range(60_000)),           # more words than are indexed
]


def test_postgresql_tsvectors_built_in_python_equal_to_tsvector(tmp_path, memory_engine):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    store = open_store(tmp_path / ".starpod", memory_engine)
    try:
        for number, text in enumerate(TRICKY_TEXTS):
            store.write(f"tricky{number}.md", text)
    finally:
        store.close()
    rows = memory_engine.query(store.home, "SELECT rowid, source, chunk_text, line_start, line_end FROM memory_fts "
                                           "WHERE source LIKE 'tricky%%'")
    assert len(rows) == len(TRICKY_TEXTS)  # one line, one chunk each
    for rowid, source, text, start, end in rows:  # to_tsvector of the words, as the index used to store
        words = " ".join(tokenize(f"{source} {text} {start} {end}"))[:MAX_INDEXED_CHARS]
        assert memory_engine.query(store.home, f"SELECT tsv = to_tsvector('{SEARCH_CONFIG}', %s) FROM memory_fts "
                                               "WHERE rowid = %s", (words, rowid)) == [(True,)], source
    assert tokenize("".join(map(chr, range(128)))) == ["0123456789", "abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"]


def test_postgresql_lexicon_starts_afresh_when_full(store, memory_engine, monkeypatch):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    monkeypatch.setattr(pgtsvector, "MAX_LEARNED", 8)
    store.write("first.md", "aardvark badger")
    store.write("second.md", "aardvark " + " ".join(f"beast{n}" for n in range(10)))
    assert sorted(sources(store.search("aardvark", None))) == ["first.md", "second.md"]
    assert sources(store.search("beast9", None)) == ["second.md"]


def quokka_home(tmp_path, memory_engine):
    """A store over six indexed files, then changed on disk (not indexed yet): (store, old hits)."""
    store = open_store(tmp_path / ".starpod", memory_engine)
    for number in range(6):
        store.write(f"knowledge/quokka{number}.md", "quokka " * (number + 1))
    before = store.search("quokka", None, 100)
    for number in range(3):
        (store.home / "knowledge" / f"quokka{number}.md").write_text("wombat")
    return store, before


def test_postgresql_full_reindex_shows_the_whole_old_index_until_the_new_one_replaces_it(tmp_path, memory_engine,
                                                                                     monkeypatch):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    monkeypatch.setattr(pgindex, "SEND_CHUNKS", 1)  # rows reach PostgreSQL as each file is read
    store, before = quokka_home(tmp_path, memory_engine)
    other = MemoryStore(store.home, MemoryConfig, memory_engine.url_for(store.home))  # another server
    gin = ("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'memory_fts' "
           "AND indexdef LIKE '%%USING gin (tsv)'")
    during = []

    def progress(done: int, total: int) -> None:
        during.append((other.search("quokka", None, 100), other.search("wombat", None, 100),
                       memory_engine.query(store.home, gin)[0][0]))
    try:
        store.reindex(progress, full=True)
        assert len(during) > 6 and set(map(str, during)) == {str((before, [], 1))}  # seeded files too
        assert sorted(sources(other.search("quokka", None, 100))) == [f"knowledge/quokka{n}.md" for n in (3, 4, 5)]
        assert len(other.search("wombat", None, 100)) == 3
    finally:
        other.close()
        store.close()
    assert memory_engine.query(store.home, gin) == [(1,)]
    assert memory_engine.query(store.home, "SELECT relname FROM pg_class WHERE relname LIKE 'next%%'") == []


def test_postgresql_search_waiting_for_the_swap_sees_the_new_index(tmp_path, memory_engine, monkeypatch):
    """A search that starts while the swap holds its lock reads the new tables once it commits,
    on a snapshot taken after it (one taken before would see them empty)."""
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    store, _ = quokka_home(tmp_path, memory_engine)
    other = MemoryStore(store.home, MemoryConfig, memory_engine.url_for(store.home))
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
               "AND datname = current_database()")
    found, set_meta = [], index.MemoryIndex.set_meta

    def swapping(conn, key: str, value: str) -> None:  # the swap's last step before its commit
        set_meta(conn, key, value)
        if key == "chunking":
            search = threading.Thread(target=lambda: found.append(other.search("wombat", None, 100)))
            search.start()
            wait_until(lambda: memory_engine.query(store.home, waiting) == [(1,)], "the search to wait")
    monkeypatch.setattr(index.MemoryIndex, "set_meta", staticmethod(swapping))
    try:
        store.reindex(full=True)
        wait_until(lambda: found, "the search")
        assert len(found[0]) == 3
    finally:
        other.close()
        store.close()


def test_writes_during_a_full_reindex_are_in_the_new_index(tmp_path, memory_engine):
    store, _ = quokka_home(tmp_path, memory_engine)
    other = MemoryStore(store.home, MemoryConfig, memory_engine.url_for(store.home))

    def progress(done: int, total: int) -> None:
        if not other.search("late", None):  # once the files are listed (on PostgreSQL, one is read)
            other.write("knowledge/late.md", "a late quokka")
            other.write("knowledge/quokka5.md", "a wombat now")
    try:
        store.reindex(progress, full=True)
        assert sorted(sources(store.search("quokka", None, 100))) == [
            "knowledge/late.md", "knowledge/quokka3.md", "knowledge/quokka4.md"]
        assert sorted(sources(store.search("wombat", None, 100))) == [f"knowledge/quokka{n}.md" for n in (0, 1, 2, 5)]
    finally:
        other.close()
        store.close()


def _crashing_rebuild(home: str, database_url: str) -> None:
    pgindex.SEND_CHUNKS = 1
    store = MemoryStore(home, MemoryConfig, database_url)
    store.reindex(lambda done, total: done == 3 and os._exit(3), full=True)


def test_postgresql_full_reindex_cut_short_leaves_the_old_index_and_no_lock(tmp_path, memory_engine):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    store, before = quokka_home(tmp_path, memory_engine)
    url = memory_engine.url_for(store.home)
    crash = multiprocessing.get_context("fork").Process(target=_crashing_rebuild, args=(str(store.home), url))
    crash.start()
    crash.join(60)
    assert crash.exitcode == 3
    try:
        assert store.search("quokka", None, 100) == before
        assert memory_engine.query(store.home, "SELECT relname FROM pg_class WHERE relname LIKE 'next%%'") == []
        locks = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                 "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        wait_until(lambda: memory_engine.query(store.home, locks) == [(0,)], "the crashed rebuild's locks freed")
        store.reindex(full=True)
        assert len(store.search("wombat", None, 100)) == 3
    finally:
        store.close()


def test_postgresql_rows_keep_the_tsvector_inline_and_migration_0014_relayouts_older_tables(store, memory_engine):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    layout = ("SELECT c.reloptions, array_agg(a.attname || '=' || a.attstorage::text ORDER BY a.attname) "
              "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname IN ('tsv', 'chunk_text') "
              "WHERE c.oid = 'memory_fts'::regclass GROUP BY c.reloptions")
    new_layout = ([f"toast_tuple_target={TOAST_TUPLE_TARGET}"], ["chunk_text=e", "tsv=m"])
    assert memory_engine.query(store.home, layout) == [new_layout]
    store.write("old.md", "an okapi written before the upgrade")
    memory_engine.query(store.home, "ALTER TABLE memory_fts RESET (toast_tuple_target), ALTER COLUMN tsv "
                                    "SET STORAGE EXTENDED, ALTER COLUMN chunk_text SET STORAGE EXTENDED")
    assert "0014_memory_fts_layout" in migrate_url(memory_engine.url_for(store.home))
    assert memory_engine.query(store.home, layout) == [new_layout]
    assert sources(store.search("okapi", None)) == []  # emptied: the next reindex rewrites every row
    store.reindex()
    assert sources(store.search("okapi", None)) == ["old.md"]


def test_postgresql_query_is_built_from_tokens_only():
    index = PostgresIndex("postgresql://unused/db")
    assert index.match_query("user's foo-bar NOT a.md") == "('user' <-> 's') & ('foo' <-> 'bar') & ('not') & ('a' <-> 'md')"
    assert index.match_query('\' " * ( ) : & | ! <-> \\') == ""
    assert tokenize("Crème BRÛLÉE 東京 naïve_x ça") == ["creme", "brulee", "東京", "naive", "x", "ca"]


REPO = str(Path(__file__).resolve().parent.parent)
GEVENT_PROBE = """
import sys
from gevent import monkey
monkey.patch_all()
import gevent
from starpod.memory.pgindex import PostgresIndex

index = PostgresIndex(sys.argv[1])
state = {"querying": False, "ticks": 0}

def ticker():
    while True:
        gevent.sleep(0.01)
        state["ticks"] += state["querying"]

def slow_query():
    with index.connection() as conn:
        state["querying"] = True
        conn.execute("SELECT pg_sleep(2)")
        state["querying"] = False

gevent.spawn(ticker)
gevent.spawn(slow_query).join()
index.close()
print(state["ticks"])
"""


def test_postgresql_waits_let_other_greenlets_run(tmp_path, memory_engine):
    if memory_engine.name != "postgresql":
        pytest.skip("PostgreSQL engine only")
    probe = subprocess.run([sys.executable, "-c", GEVENT_PROBE, memory_engine.url_for(tmp_path)],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert probe.returncode == 0, probe.stderr
    assert int(probe.stdout) >= 3  # a blocking wait would let the ticker run 0 times during the query


def test_sqlite_index_of_the_previous_schema_is_rebuilt(tmp_path):
    import sqlite3

    home = tmp_path / "h"
    (home / "db").mkdir(parents=True)
    old = sqlite3.connect(home / "db" / "memory.db")
    old.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                      "INSERT INTO meta VALUES ('schema_version', '3');"
                      "CREATE TABLE files (id INTEGER PRIMARY KEY, source TEXT);"
                      "CREATE VIRTUAL TABLE memory_fts USING fts5(source, chunk_text, line_start, line_end, owner UNINDEXED);"
                      "INSERT INTO memory_fts VALUES ('gone.md', 'stale wombat', 1, 1, '');")
    old.close()
    (home / "kept.md").write_text("fresh wombat")
    store = MemoryStore(home, MemoryConfig)
    store.open()
    assert sources(store.search("wombat", None)) == ["kept.md"]
    with store.index.connection() as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not {"meta", "files"} & tables
    store.close()
