"""`starpod memory ...`: maintenance commands for the memory index (plain click, no Flask)."""
from __future__ import annotations

from typing import Callable

import click

from ..config import Config


def memory_group(get_config: Callable[[], Config]) -> click.Group:
    """The `memory` command group; `get_config` gives the running app's Config."""
    group = click.Group("memory", help="Long-term memory index.")

    @group.command("reindex")
    @click.option("--full", is_flag=True, help="Rebuild the whole index instead of only changed files.")
    def reindex(full):
        """Index every markdown file under the data directory that changed (or all, with --full)."""
        from . import get_store

        store = get_store(get_config())
        with click.progressbar(length=1, label="Indexing memory", show_pos=True) as bar:
            def progress(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done - bar.pos)
            stats = store.reindex(progress, full=full)
        click.echo(f"{stats['files']} files: {stats['indexed']} indexed ({stats['bytes'] / 1e6:.1f} MB), "
                   f"{stats['unchanged']} unchanged, {stats['removed']} removed in {stats['seconds']:.2f} s")

    return group
