"""Ctrl-C while the command runs a job: the first asks the job to stop between two steps (a
KeyboardInterrupt raised inside a library could fail the job instead of cancelling it), a
second stops at once; the pool's workers never see it (the fork server starts ignoring it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from imagebank.cli.interrupt import CtrlC
from imagebank.services.jobs import Cancelled


def test_a_first_ctrl_c_asks_and_a_second_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with CtrlC() as stop:
        stop.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.pressed
        with pytest.raises(Cancelled):
            stop.check()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.sigtimedwait([], 0)  # a point where the handler has surely run
    assert signal.getsignal(signal.SIGINT) is before


# In a fresh interpreter: this one's fork server (if another test started one) is not ours.
_WORKERS = """
import signal
from concurrent.futures import ProcessPoolExecutor
from imagebank.ingest.worker import pool_context

def handler():
    return str(signal.getsignal(signal.SIGINT))

if __name__ == "__main__":
    with ProcessPoolExecutor(2, mp_context=pool_context("forkserver")) as pool:
        print(pool.submit(handler).result())
    print(str(signal.getsignal(signal.SIGINT)))
"""


def test_forkserver_workers_ignore_ctrl_c_from_birth(tmp_path) -> None:
    script = tmp_path / "workers.py"
    script.write_text(_WORKERS)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, check=True, cwd=tmp_path)
    worker, owner = done.stdout.split("\n")[:2]
    assert worker == str(signal.SIG_IGN)  # no initializer needed
    assert owner == str(signal.default_int_handler)  # the owner's own is as it was
