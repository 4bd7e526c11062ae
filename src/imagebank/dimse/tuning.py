"""Adaptive polling for pynetdicom's reactor threads.

pynetdicom runs two threads per association, each a loop that polls its queues and sleeps
1 ms between polls when idle (``dul.py``: ``time.sleep(self._run_loop_delay)``;
``association.py``: ``time.sleep(0.001)``). Every C-STORE crosses both loops more than once,
so a stream of C-STOREs spends about 1.3 ms of each instance asleep: pynetdicom alone tops out
near 300 instances/s of 512×512 CT on this class of machine, whatever the handler does.

``install()`` replaces the ``time`` module those two modules see with a shim whose 1 ms poll
sleeps only 50 µs while the thread is busy (it did work since its last poll, or within the
last 20 ms), and the full 1 ms once idle, so an idle association costs what it did before.
Fast polls are for a lone association (or two): with more at once, their reactor threads
polling every 50 µs would fight over the interpreter lock and slow every one of them (8
concurrent storescu: 127 → 97 instances/s), so the listener reports how many associations are
running (``associations``) and above ``FAST_UP_TO`` every poll is the full 1 ms.
Every other call is passed through unchanged. Measured with DCMTK's storescu and a handler
that does nothing: 300 → 420 instances/s (docs/benchmarks.md).

This reaches into pynetdicom's modules, so the versions it was written for are pinned
(``pynetdicom>=3.0,<3.1`` in pyproject.toml) and a test checks the shim is in place.
"""

from __future__ import annotations

import threading
import time as _time
from typing import Any

#: The poll interval pynetdicom's reactors use, which the shim adapts.
POLL = 0.001
#: How long a busy thread polls, and for how long after its last work it stays busy.
FAST_POLL = 0.00005
HOT_FOR = 0.02
#: A gap this long between polls means the loop did work in between.
_WORK_GAP = 0.0001
#: Fast polls while at most this many associations are running.
FAST_UP_TO = 2


class _Load:
    """How many associations are running (kept by the listener)."""

    def __init__(self) -> None:
        self.running = 0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self.running = max(0, self.running + delta)


associations = _Load()


class _State(threading.local):
    last_poll_end = 0.0
    busy_since = 0.0


class AdaptiveTime:
    """A stand-in for the ``time`` module with an adaptive ``sleep`` for the reactor polls."""

    def __init__(self) -> None:
        self._state = _State()

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    def sleep(self, seconds: float) -> None:
        if seconds != POLL:
            _time.sleep(seconds)
            return
        state = self._state
        now = _time.monotonic()
        if now - state.last_poll_end > _WORK_GAP:
            state.busy_since = now
        hot = now - state.busy_since < HOT_FOR and associations.running <= FAST_UP_TO
        _time.sleep(FAST_POLL if hot else POLL)
        state.last_poll_end = _time.monotonic()


_SHIM = AdaptiveTime()


def install() -> None:
    """Put the adaptive shim in pynetdicom's reactor modules (idempotent)."""
    from pynetdicom import association, dul

    for module in (association, dul):
        setattr(module, "time", _SHIM)  # noqa: B010 - the module attribute is the point


def installed() -> bool:
    from pynetdicom import association, dul

    return all(getattr(module, "time", None) is _SHIM for module in (association, dul))
