"""Jobs: long work (imports, exports) run in the server's process by a runner thread.

A job is a row with a state (queued, running, succeeded, failed, cancelled) and progress, so
it survives a restart: jobs found running at start-up go back to the queue, and imports are
idempotent (identical bytes are a no-op), so running one again finishes it. Uploaded files
wait in ``DATA/spool``; export results are written to ``DATA/exports``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagebank.domain.errors import ConflictError, ImagebankError, NotFoundError
from imagebank.index import jobs as sql
from imagebank.index.repo import aware
from imagebank.ingest.pipeline import BatchReport
from imagebank.services.archive import Archive
from imagebank.services.exports import iter_zip

log = logging.getLogger("imagebank.jobs")

TERMINAL = ("succeeded", "failed", "cancelled")
#: Progress is written at most this often (each update is a transaction).
PROGRESS_INTERVAL = 0.5


class Cancelled(Exception):
    """Raised inside a job's work when someone cancelled it."""


class JobFailed(ImagebankError):
    """A job's work ended, with problems that fail the job: it keeps ``result`` (what was
    done) beside its error (a clinical import some of whose resources could not be read)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class JobContext:
    jobs: Jobs
    job: dict[str, Any]
    #: Told of every progress report (the CLI's progress bar), not only those written.
    listener: Callable[[int, int | None, str], None] | None = None
    _last: float = 0.0

    @property
    def params(self) -> dict[str, Any]:
        return dict(json.loads(self.job["params"] or "{}"))

    def progress(self, done: int, total: int | None = None, message: str = "",
                 force: bool = False) -> None:
        if self.listener is not None:
            self.listener(done, total, message)
        moment = time.monotonic()
        if not force and moment - self._last < PROGRESS_INTERVAL:
            return
        self._last = moment
        values: dict[str, Any] = {"progress_done": done, "message": message[:500]}
        if total is not None:
            values["progress_total"] = total
        with self.jobs.archive.sessions.begin() as session:
            sql.update_job(session, self.job["id"], **values)
            state = (sql.get_job(session, self.job["id"]) or {}).get("state")
        if state == "cancelled":
            raise Cancelled


Handler = Callable[[JobContext], dict[str, Any]]


def _public(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["params"] = json.loads(out.get("params") or "{}")
    out["result"] = json.loads(out["result"]) if out.get("result") else None
    for key in ("created_at", "started_at", "finished_at", "updated_at"):
        out[key] = aware(out.get(key))
    return out


class Jobs:
    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.exports = archive.settings.data / "exports"
        self.handlers: dict[str, Handler] = {"import": self._run_import,
                                             "export": self._run_export,
                                             "share": self._run_release,
                                             "release": self._run_release,
                                             "clinical_import": self._run_clinical_import}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the queue --------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def submit(self, kind: str, project_id: str | None, params: dict[str, Any],
               created_by: str | None, job_id: str | None = None) -> dict[str, Any]:
        """Queue a job; an import's upload must be in ``spool_path(job_id)`` already."""
        job_id = job_id or self.new_id()
        with self.archive.sessions.begin() as session:
            sql.add_job(session, {"id": job_id, "kind": kind, "project_id": project_id,
                                  "params": json.dumps(params), "created_by": created_by})
        self._wake.set()
        return self.get(job_id)

    def spool_path(self, job_id: str) -> Path:
        # ".zip": the ingest recognises archives by their extension (ingest.sources).
        return self.archive.spool_dir() / f"{job_id}.zip"

    def clinical_spool(self, job_id: str) -> Path:
        """The folder a clinical import's uploaded files wait in until its job ends."""
        return self.archive.spool_dir() / f"{job_id}.fhir"

    def get(self, job_id: str) -> dict[str, Any]:
        with self.archive.sessions.begin() as session:
            row = sql.get_job(session, job_id)
        if row is None:
            raise NotFoundError(f"No job {job_id}.")
        return _public(row)

    def list(self, *, created_by: str | None = None, project_ids: list[str] | None = None,
             limit: int = 100) -> list[dict[str, Any]]:
        with self.archive.sessions.begin() as session:
            return [_public(r) for r in sql.list_jobs(session, created_by=created_by,
                                                      project_ids=project_ids, limit=limit)]

    def cancel(self, job_id: str) -> dict[str, Any]:
        job = self.get(job_id)
        if job["state"] in TERMINAL:
            raise ConflictError(f"Job {job_id} has already {job['state']}.")
        with self.archive.sessions.begin() as session:
            sql.finish_job(session, job_id, "cancelled", message="cancelled")
        if job["state"] == "queued":  # a running job removes its own files when it stops
            shutil.rmtree(self.clinical_spool(job_id), ignore_errors=True)
        return self.get(job_id)

    def result_path(self, job: dict[str, Any]) -> Path:
        if job["state"] != "succeeded" or not (job.get("result") or {}).get("file"):
            raise ConflictError(f"Job {job['id']} has no result to download (it is "
                                f"{job['state']}).")
        path = self.exports / f"{job['id']}.zip"
        if not path.exists():
            raise NotFoundError(f"The result of job {job['id']} has been removed.")
        return path

    # -- the runner -------------------------------------------------------------------------
    def requeue_interrupted(self) -> int:
        """Jobs left running by a server that stopped go back to the queue."""
        with self.archive.sessions.begin() as session:
            requeued = sql.requeue_running(session)
        if requeued:
            log.info("requeued %d jobs left running by the last server", requeued)
        return requeued

    def start(self, *, requeue: bool = True) -> None:
        """Start the runner thread; ``requeue`` first (only the first process of a server
        may: another one's running jobs are not interrupted)."""
        if requeue:
            self.requeue_interrupted()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="imagebank-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_pending(self) -> int:
        """Run queued jobs in this thread until none is left (tests, the CLI)."""
        count = 0
        while self._run_one():
            count += 1
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self._run_one()
            except Exception:  # the runner must outlive one bad job or a database blip
                log.exception("job runner error")
                ran = False
            if not ran:
                self._wake.wait(timeout=2.0)
                self._wake.clear()

    def run(self, job_id: str, listener: Callable[[int, int | None, str], None] | None = None
            ) -> dict[str, Any]:
        """Run this queued job here and now (the CLI: ``imagebank share``, ``export``),
        telling ``listener`` of its progress; its row as it ended. A ConflictError when it is
        not queued (a server's runner took it first)."""
        with self.archive.sessions.begin() as session:
            job = sql.claim(session, job_id)
        if job is None:
            raise ConflictError(f"Job {job_id} is not waiting to run any more; follow it "
                                f"with GET /api/v1/jobs/{job_id}.")
        self._execute(JobContext(self, job, listener))
        return self.get(job_id)

    def _run_one(self) -> bool:
        with self.archive.sessions.begin() as session:
            job = sql.claim_next(session)
        if job is None:
            return False
        self._execute(JobContext(self, job))
        return True

    def _execute(self, context: JobContext) -> None:
        job = context.job
        handler = self.handlers.get(job["kind"])
        try:
            if handler is None:
                raise ImagebankError(f"No handler for jobs of kind {job['kind']!r}.")
            result = handler(context)
        except Cancelled:
            # What an import stored stays stored; its upload is not needed any more.
            self.spool_path(job["id"]).unlink(missing_ok=True)
            return
        except JobFailed as exc:
            self._finish(job["id"], "failed", error=exc.message, message="failed",
                         result=json.dumps(exc.result, default=str))
        except ImagebankError as exc:
            self._finish(job["id"], "failed", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - a job's failure is recorded on the job
            log.error("job %s (%s) failed: %s", job["id"], job["kind"], type(exc).__name__)
            self._finish(job["id"], "failed",
                         error=f"Internal error ({type(exc).__name__}); see the server log.")
        else:
            self._finish(job["id"], "succeeded", result=json.dumps(result, default=str),
                         message="done")

    def _finish(self, job_id: str, state: str, **values: Any) -> None:
        with self.archive.sessions.begin() as session:
            sql.finish_job(session, job_id, state, **values)

    # -- kinds of job -----------------------------------------------------------------------
    def _run_import(self, context: JobContext) -> dict[str, Any]:
        job = context.job
        path = self.spool_path(job["id"])
        if not path.exists():
            raise NotFoundError("The uploaded file of this import is no longer in the spool.")
        total = path.stat().st_size
        context.progress(0, None, "importing", force=True)

        def on_batch(report: BatchReport) -> None:
            summary = report.summary
            context.progress(summary.total, None,
                             f"{summary.stored} stored, {summary.duplicates} duplicates, "
                             f"{summary.quarantined} quarantined of {total} bytes received")

        summary = self.archive.ingest([path], job["project_id"], progress=on_batch,
                                      start_method="forkserver")
        context.progress(summary.total, summary.total, "imported", force=True)
        os.unlink(path)
        return summary.as_dict()

    def _run_export(self, context: JobContext) -> dict[str, Any]:
        params = context.params
        level = params.get("level", "study")
        rows = self.archive.instance_objects(level, params.get("ids", []))
        context.progress(0, len(rows), "writing the zip", force=True)
        self.exports.mkdir(parents=True, exist_ok=True)
        final = self.exports / f"{context.job['id']}.zip"
        partial = final.with_suffix(".partial")
        written = 0
        with partial.open("wb") as out:
            for chunk in iter_zip(self.archive.store, rows,
                                  progress=lambda n: context.progress(n, len(rows))):
                out.write(chunk)
                written += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(final)
        context.progress(len(rows), len(rows), "written", force=True)
        return {"file": final.name, "size_bytes": written, "instances": len(rows)}

    def _run_clinical_import(self, context: JobContext) -> dict[str, Any]:
        """FHIR files uploaded to ``clinical_spool`` (services.clinical_job)."""
        from imagebank.services.clinical_job import run_clinical_import

        return run_clinical_import(self.archive, context,
                                   self.clinical_spool(context.job["id"]))

    def _run_release(self, context: JobContext) -> dict[str, Any]:
        """A share or an export through the de-identification pipeline (services.release)."""
        from imagebank.services.release import ReleaseSpec, run_release

        spec = ReleaseSpec.from_job(context.job["kind"], context.params)

        def report(done: int, total: int, summary: Any) -> None:
            context.progress(done, total, f"{summary.written} released, "
                             f"{summary.files - summary.written} not released of {total}",
                             force=done in (0, total))

        settings = self.archive.settings
        result = run_release(self.archive, spec, context.job["id"], progress=report,
                             workers=min(settings.workers, 4), scheduler=settings.jobs,
                             start_method="forkserver")
        download = self.exports / f"{context.job['id']}.zip"  # the zip sink makes the folder
        if spec.kind == "release" and spec.target == str(download):
            result["file"] = download.name  # GET /jobs/{id}/result
            result["to"] = {"zip": "download"}
        return result
