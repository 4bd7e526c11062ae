"""Progress of an ingest: a Rich bar with files/s and MB/s, or JSON lines for scripts."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from imagebank.ingest.pipeline import BatchReport

if TYPE_CHECKING:
    from imagebank.services.deid import DeidReport


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str = "files", megabytes: bool = True) -> None:
        super().__init__()
        self.unit, self.megabytes = unit, megabytes

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed <= 0:
            return Text("")
        rate = f"{task.completed / elapsed:,.0f} {self.unit}/s"
        if self.megabytes:
            rate += f" {task.fields.get('bytes', 0) / elapsed / 1e6:,.1f} MB/s"
        return Text(rate, style="cyan")


class IngestProgress:
    """A live bar on stderr: files done, rates, and the running outcome counts."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]ingest"), TextColumn("{task.completed:,} files"),
            _RateColumn(), TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("ingest", total=None, bytes=0, counts="")
        self._bytes = 0

    def __enter__(self) -> IngestProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, report: BatchReport) -> None:
        self._bytes += report.bytes
        s = report.summary
        self.progress.update(
            self.task, advance=report.files, bytes=self._bytes,
            counts=f"stored {s.stored:,} dup {s.duplicates:,} conflict {s.conflicts:,} "
                   f"quarantined {s.quarantined:,}",
        )


class JsonlProgress:
    """One JSON object per committed batch, flushed at once (for scripts and tests)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self.files = 0

    def __enter__(self) -> JsonlProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, report: BatchReport) -> None:
        self.files += report.files
        line = {"event": "batch", "files": self.files, "stored_ids": report.stored_ids,
                "elapsed": round(time.monotonic() - self.started, 3),
                **report.summary.as_dict()}
        print(json.dumps(line), flush=True)


class DeidProgress:
    """``imagebank deid``'s live bar on stderr: files done, rate, and what was not written."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]deid"), TextColumn("{task.completed:,} files"),
            _RateColumn(), TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("deid", total=None, bytes=0, counts="")

    def __enter__(self) -> DeidProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, report: DeidReport) -> None:
        s = report.summary
        self.progress.update(
            self.task, completed=s.files, bytes=s.bytes_out,
            counts=f"written {s.written:,} refused {s.refused:,} blocked {s.blocked:,} "
                   f"unreadable {s.unreadable:,} failed {s.failed:,}",
        )


class JsonlDeidProgress:
    """``imagebank deid --jsonl``: a line per task of files with the counts so far, and a line
    per file not written (its source, status, reason and the scan's findings: tag paths and
    kinds, never values)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __enter__(self) -> JsonlDeidProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, report: DeidReport) -> None:
        for outcome in report.outcomes:
            if outcome.status != "written":
                print(json.dumps({"event": "problem", **outcome.as_dict()}), flush=True)
        print(json.dumps({"event": "progress",
                          "elapsed": round(time.monotonic() - self.started, 3),
                          **report.summary.as_dict()}), flush=True)


class JobProgress:
    """A job run by the CLI (``share``, ``export``): a bar of objects done out of the total,
    with the job's own message (counts, never values)."""

    def __init__(self, console: Console, label: str, unit: str = "objects") -> None:
        self.progress = Progress(
            SpinnerColumn(), TextColumn(f"[bold]{label}"), BarColumn(),
            MofNCompleteColumn(), _RateColumn(unit, megabytes=False),
            TextColumn("{task.fields[message]}"), TimeElapsedColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task(label, total=None, bytes=0, message="")

    def __enter__(self) -> JobProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, done: int, total: int | None, message: str) -> None:
        self.progress.update(self.task, completed=done, total=total, message=message)
