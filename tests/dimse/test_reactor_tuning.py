"""The adaptive polling shim is in pynetdicom's reactor modules whenever the listener is, and
decides its polls as documented (checked on a fake clock: no timing on a busy machine)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pynetdicom import association, dul

import imagebank.dimse.scp  # noqa: F401 - importing the listener installs the shim
from imagebank.dimse import tuning


class FakeClock:
    """``monotonic`` advances only by what ``sleep`` is asked for (plus work we declare)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def work(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(tuning, "_time", fake)
    monkeypatch.setattr(tuning.associations, "running", 1)
    return fake


def test_the_listener_installs_the_shim_in_both_reactors() -> None:
    assert tuning.installed()
    shim: Any = association.time
    assert shim is dul.time
    assert shim.monotonic is time.monotonic  # everything but sleep is the real module


def test_polls_are_short_while_busy_and_full_once_idle(clock: FakeClock) -> None:
    shim = tuning.AdaptiveTime()
    shim.sleep(tuning.POLL)  # the first poll follows work: fast
    assert clock.slept == [tuning.FAST_POLL]
    while clock.now < 1000.0 + tuning.HOT_FOR:  # idle polls, no work in between
        shim.sleep(tuning.POLL)
    shim.sleep(tuning.POLL)
    assert clock.slept[-1] == tuning.POLL  # idle for HOT_FOR: full polls
    clock.work(0.001)  # work between two polls makes it busy again
    shim.sleep(tuning.POLL)
    assert clock.slept[-1] == tuning.FAST_POLL


def test_no_fast_polls_with_many_associations(clock: FakeClock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning.associations, "running", tuning.FAST_UP_TO + 1)
    shim = tuning.AdaptiveTime()
    clock.work(0.001)
    shim.sleep(tuning.POLL)
    assert clock.slept == [tuning.POLL]


def test_other_sleeps_pass_through(clock: FakeClock) -> None:
    tuning.AdaptiveTime().sleep(0.01)
    assert clock.slept == [0.01]
