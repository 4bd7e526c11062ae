"""Review of issue 4: the group committer answers every ticket it took, even when something
escapes the shared commit, so that no caller waits (or spins) forever."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from imagebank.ingest import group
from imagebank.ingest.group import GroupCommitter
from imagebank.ingest.pipeline import BatchReport


class _Committer:
    """Stands in for the pipeline's Committer: the first commit blocks until released."""

    def __init__(self, release: threading.Event, entered: threading.Event) -> None:
        self.release, self.entered, self.calls = release, entered, 0

    def commit(self, batch: list[Any]) -> BatchReport:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(30)
        return BatchReport(files=len(batch), bytes=0)


def _item(name: str) -> Any:
    return SimpleNamespace(size=1, instance_id=name)


def test_an_error_after_the_shared_commit_answers_every_caller(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release, entered = threading.Event(), threading.Event()
    committer = _Committer(release, entered)
    committers = GroupCommitter(lambda project: committer)  # type: ignore[arg-type, return-value]
    real_split = group._split

    def failing_split(shared: BatchReport, items: list[Any]) -> BatchReport:
        if committer.calls >= 2:  # the second batch: splitting its report fails
            raise RuntimeError("split failed")
        return real_split(shared, items)

    monkeypatch.setattr(group, "_split", failing_split)
    answers: dict[str, object] = {}

    def send(name: str) -> None:
        try:
            answers[name] = committers.commit("p", [_item(name)])
        except Exception as exc:  # the answer under test
            answers[name] = exc

    first = threading.Thread(target=send, args=("a",), daemon=True)
    first.start()
    assert entered.wait(30)  # "a" leads and is inside the commit
    others = [threading.Thread(target=send, args=(n,), daemon=True) for n in ("b", "c")]
    for thread in others:
        thread.start()
    # Both wait behind the leader, so that the next batch holds both of their tickets.
    deadline = threading.Event()
    for _ in range(300):
        with committers._cond:
            if len(committers._waiting) == 2:
                break
        deadline.wait(0.01)
    release.set()
    for thread in (first, *others):
        thread.join(10)
    assert not any(t.is_alive() for t in (first, *others)), "a caller was never answered"
    assert isinstance(answers["a"], BatchReport)
    # The batch of "b" and "c" failed while its report was split: each is told.
    assert all(isinstance(answers[n], RuntimeError) for n in ("b", "c")), answers
    assert committers._leading is False
    # And the committer still works for the next caller.
    monkeypatch.setattr(group, "_split", real_split)
    assert isinstance(committers.commit("p", [_item("d")]), BatchReport)
