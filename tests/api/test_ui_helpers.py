"""Small helpers of the web UI's templates."""

from __future__ import annotations

import pytest

from imagebank.api.ui import human_size


@pytest.mark.parametrize(("size", "shown"), [
    (None, ""), (0, "0 bytes"), (1023, "1,023 bytes"), (1024, "1 KiB"), (1536, "1.5 KiB"),
    (5 * 1024**2 + 10, "5 MiB"), (4 * 1024**3, "4 GiB"), (3000 * 1024**3, "3,000 GiB"),
])
def test_sizes_are_shown_in_binary_units(size: int | None, shown: str) -> None:
    assert human_size(size) == shown
