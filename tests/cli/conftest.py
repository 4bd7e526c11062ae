"""Every CLI test runs without the caller's IMAGEBANK_* settings, one parse worker, and
consoles wide enough that printed values are never folded."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from imagebank.cli import main as cli_main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IMAGEBANK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IMAGEBANK_WORKERS", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(autouse=True)
def wide_console() -> Iterator[None]:
    """Tables printed in this process are not folded at 80 columns (values stay whole)."""
    consoles = (cli_main.out, cli_main.err)
    widths = [c.width for c in consoles]
    for console in consoles:
        console.width = 2000
    yield
    for console, width in zip(consoles, widths, strict=True):
        console.width = width
