"""``read_file``: the bytes of a file, at most a limit, read without a limit-sized buffer."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebank.ingest.worker import read_file


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * (1 << 20) + 7])
def test_whole_file_below_the_limit(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f"
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path.write_bytes(data)
    assert read_file(str(path), 4 * 1024**3 + 1) == data


@pytest.mark.parametrize(("size", "limit"), [(10, 10), (11, 10), (5 << 20, (3 << 20) + 1)])
def test_at_most_the_limit(tmp_path: Path, size: int, limit: int) -> None:
    path = tmp_path / "f"
    data = b"a" * size
    path.write_bytes(data)
    assert read_file(str(path), limit) == data[:limit]


def test_a_file_longer_than_its_listed_size_is_read_whole(tmp_path: Path) -> None:
    # /proc files report size 0; a growing file is longer than fstat said: read to the end.
    assert read_file("/proc/self/status", 1 << 20).startswith(b"Name:")


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_file(str(tmp_path / "missing"), 100)
