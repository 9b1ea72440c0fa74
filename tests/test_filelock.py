"""The shared cross-process file lock (used by settings writes, instances and memory reindex)."""
from __future__ import annotations

import pytest

from starpod.filelock import LockTimeout, exclusive


def test_second_holder_waits_gives_up_or_times_out(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    with exclusive(lock) as held:
        assert held is True and lock.exists()
        with exclusive(lock, wait=False) as other:
            assert other is False
        with pytest.raises(LockTimeout):
            with exclusive(lock, timeout=0.05):
                pass
    with exclusive(lock, timeout=0.05) as again:  # released on exit
        assert again is True
