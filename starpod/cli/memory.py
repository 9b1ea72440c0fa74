"""`starpod memory ...`: bring the search index in line with the markdown files, and search it."""
from __future__ import annotations

import argparse
import sys

from .common import add_command, add_group, data_directory, print_record, print_rows, require_initialized

HIT_COLUMNS = [("path", "PATH"), ("lines", "LINES"), ("score", "SCORE"), ("text", "TEXT")]
PREVIEW_CHARS = 80


def register(subparsers, common) -> None:
    group = add_group(subparsers, "memory", common, "Long-term memory index.")
    reindex = add_command(group, "reindex", common, reindex_memory,
                          "Index every markdown file that changed since the last reindex (all with --full).")
    reindex.add_argument("--full", action="store_true", help="rebuild the whole index")

    search = add_command(group, "search", common, search_memory,
                         "Search the shared memory (and one user's own space with --user).")
    search.add_argument("query")
    search.add_argument("--user", dest="user_id", help="also search this user's private space")
    search.add_argument("--limit", type=int, default=10, help="at most this many hits (default 10)")


def _open_memory(args: argparse.Namespace):
    from ..memory import MemoryStore

    config = data_directory(args)
    require_initialized(config)
    store = MemoryStore(config.home, lambda: config.agent.memory, config.database_url)
    store.index.open()
    return store


def reindex_memory(args: argparse.Namespace) -> int:
    store = _open_memory(args)
    show_progress = sys.stderr.isatty() and not args.json
    try:
        stats = store.reindex(_print_progress if show_progress else None, full=args.full)
    finally:
        store.close()
    if show_progress:
        print(file=sys.stderr)
    print_record(args, stats,
                 f"{stats['files']} files: {stats['indexed']} indexed ({stats['bytes'] / 1e6:.1f} MB), "
                 f"{stats['unchanged']} unchanged, {stats['removed']} removed in {stats['seconds']:.2f} s")
    return 0


def _print_progress(done: int, total: int) -> None:
    print(f"\rIndexing memory: {done}/{total} files", end="", file=sys.stderr, flush=True)


def search_memory(args: argparse.Namespace) -> int:
    store = _open_memory(args)
    try:
        hits = store.search(args.query, args.user_id, max(1, min(args.limit, 100)))
    finally:
        store.close()
    rows = [{"path": hit.path, "lines": f"{hit.line_start}-{hit.line_end}", "score": float(f"{hit.score:.4g}"),
             "text": hit.text if args.json else _preview(hit.text)} for hit in hits]
    print_rows(args, HIT_COLUMNS, rows)
    return 0


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[:PREVIEW_CHARS - 1] + "\u2026"
