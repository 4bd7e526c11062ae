"""Running the command line in tests: the real console script in a subprocess (``run``) or
``main()`` in this process (``cli``), with the checks every CLI test wants."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from imagebank.cli.main import main

IMAGEBANK = Path(sys.executable).parent / "imagebank"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _check(result: Result, expect: int | None) -> Result:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    if expect is not None:
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
    return result


def _argv(args: tuple[str | Path, ...], data: Path | None) -> list[str]:
    return (["--data", str(data)] if data is not None else []) + [str(a) for a in args]


def run(*args: str | Path, data: Path | None = None, cwd: Path | None = None,
        env: dict[str, str] | None = None, stdin: str = "", expect: int | None = 0) -> Result:
    """The real console script, in a subprocess."""
    proc = subprocess.run([str(IMAGEBANK), *_argv(args, data)], check=False,
                          capture_output=True, text=True, input=stdin, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)
    return _check(Result(proc.returncode, proc.stdout, proc.stderr), expect)


def cli(*args: str | Path, data: Path | None = None, stdin: str = "",
        expect: int | None = 0) -> Result:
    """``main()`` in this process, as the console script calls it."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["imagebank", *_argv(args, data)]), \
            mock.patch.object(sys, "stdin", io.StringIO(stdin)), \
            redirect_stdout(out), redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return _check(Result(code, out.getvalue(), err.getvalue()), expect)


def cli_json(*args: str | Path, data: Path, expect: int = 0) -> Any:
    return json.loads(cli(*args, "--json", data=data, expect=expect).stdout)


def assert_one_line_error(result: Result, *words: str) -> str:
    """Exit status 2 and one line on stderr, ``error: ...``, containing ``words``."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
