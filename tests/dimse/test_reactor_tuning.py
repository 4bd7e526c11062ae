"""The adaptive polling shim is in pynetdicom's reactor modules whenever the listener is."""

from __future__ import annotations

import time

from pynetdicom import association, dul

import imagebank.dimse.scp  # noqa: F401 - importing the listener installs the shim
from imagebank.dimse import tuning


def test_the_listener_installs_the_shim_in_both_reactors() -> None:
    assert tuning.installed()
    assert association.time is dul.time
    # Everything but sleep is the real time module.
    assert association.time.monotonic is time.monotonic


def test_polls_are_short_while_busy_and_full_once_idle() -> None:
    shim = tuning.AdaptiveTime()
    started = time.monotonic()
    shim.sleep(tuning.POLL)  # first poll after work: fast
    busy = time.monotonic() - started
    assert busy < tuning.POLL
    # Keep polling without work in between until the hot window has passed: then 1 ms polls.
    deadline = time.monotonic() + tuning.HOT_FOR + 0.05
    while time.monotonic() < deadline:
        shim.sleep(tuning.POLL)
    started = time.monotonic()
    shim.sleep(tuning.POLL)
    assert time.monotonic() - started >= tuning.POLL * 0.9


def test_other_sleeps_pass_through() -> None:
    shim = tuning.AdaptiveTime()
    started = time.monotonic()
    shim.sleep(0.01)
    assert time.monotonic() - started >= 0.009
