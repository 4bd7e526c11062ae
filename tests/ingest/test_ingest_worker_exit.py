"""Parse workers end with their ingest, even when it is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from testkit import REPO, write_study

IMAGEBANK = str(REPO / ".venv" / "bin" / "imagebank")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_exit_when_the_ingest_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    for patient in range(20):
        write_study(folder, patient, slices=10, rows=32, columns=32)
    env = {**os.environ, "IMAGEBANK_DATA": str(tmp_path / "data"), "IMAGEBANK_BATCH_SIZE": "8",
           "IMAGEBANK_WORKERS": "2"}
    subprocess.run([IMAGEBANK, "project", "create", "p"], env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen([IMAGEBANK, "ingest", str(folder), "-p", "p", "--jsonl"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert '"event": "batch"' in proc.stdout.readline()
        workers = _children(proc.pid)
        assert len(workers) == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_running(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [w for w in workers if _running(w)]
    for pid in survivors:  # do not leak them if the assertion below fails
        os.kill(pid, signal.SIGKILL)
    assert survivors == []
