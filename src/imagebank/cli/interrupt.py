"""Ctrl-C during a job the command runs itself (``share``, ``export``).

A KeyboardInterrupt raised wherever the main thread happens to be can land inside a library
(the process pool's shutdown, the database driver) and come out as another error, failing the
job instead of cancelling it. So the first Ctrl-C only asks: the job stops at its next progress
report, where stopping is safe, and is cancelled. A second Ctrl-C stops at once, as before.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from imagebank.services.jobs import Cancelled


class CtrlC:
    """Within ``with CtrlC() as stop:``, a first Ctrl-C sets ``stop.pressed``; ``stop.check()``
    then raises Cancelled (call it where the work may stop). Outside the main thread (where
    no signal handler can be set) Ctrl-C is left as it was."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.pressed:
            raise KeyboardInterrupt  # asked twice: now
        self.pressed = True

    def check(self) -> None:
        if self.pressed:
            raise Cancelled
