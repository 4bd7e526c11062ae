"""A clinical import as a server job (issue 6, decision 0025): uploaded FHIR files are staged
in the data folder, then imported by the job runner with progress; the job's files are
deleted when it ends.

Staged files are named by their place in the upload (``0001.json``, ``0002.ndjson``), never
by the client's file names (synthea names a bundle after its patient); an NDJSON file whose
first resource is a Patient (or a Medication) is named ``Patient.<n>.ndjson`` so that the
reader takes it before the facts that refer to it, as it does a bulk export's. Problems are
reported with those names: ``0002.ndjson:14``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from imagebank.services.archive import Archive
from imagebank.services.jobs import JobContext, JobFailed, Jobs

#: What a staged file holds: "json" (a Bundle, or one resource) or "ndjson" (a resource a
#: line); its content as bytes, or a file already on the data folder's disk (moved).
UploadFormat = Literal["json", "ndjson"]
Upload = tuple[UploadFormat, bytes | Path]
#: Problems listed in a job's result (all are counted).
LISTED_PROBLEMS = 100


def submit_clinical_import(jobs: Jobs, project: str, files: Sequence[Upload], *,
                           strict: bool, created_by: str | None) -> dict[str, Any]:
    """Stage ``files`` (durably) in the job's folder, then queue the job: the runner always
    finds its files."""
    job_id = jobs.new_id()
    folder = jobs.clinical_spool(job_id)
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True)
    try:
        for index, (kind, content) in enumerate(files, 1):
            target = partial / _staged_name(index, kind, content)
            if isinstance(content, Path):
                os.replace(content, target)
            else:
                with target.open("wb") as out:
                    out.write(content)
                    out.flush()
                    os.fsync(out.fileno())
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        for _, content in files:
            if isinstance(content, Path):
                content.unlink(missing_ok=True)
        raise
    return jobs.submit("clinical_import", project, {"strict": strict, "files": len(files)},
                       created_by, job_id)


def _staged_name(index: int, kind: UploadFormat, content: bytes | Path) -> str:
    if kind == "ndjson":
        first = _first_resource_type(content)
        if first in ("Patient", "Medication"):
            return f"{first}.{index:04d}.ndjson"
    return f"{index:04d}.{kind}"


def _first_resource_type(content: bytes | Path) -> str | None:
    """The resourceType of an NDJSON's first resource (None when it cannot be told: the
    reader reports what is wrong)."""
    if isinstance(content, Path):
        with content.open("rb") as stream:
            line = next((raw for raw in stream if raw.strip()), b"")
    else:
        line = next((raw for raw in content.splitlines() if raw.strip()), b"")
    try:
        resource = json.loads(line)
    except ValueError:
        return None
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    return kind if isinstance(kind, str) else None


def run_clinical_import(archive: Archive, context: JobContext, folder: Path
                        ) -> dict[str, Any]:
    """The job: import the staged files; progress is resources read. The result is the
    import's summary with the first problems; any problem fails the job (as the CLI exits
    1), what could be read staying imported (an import run again adds nothing)."""
    from imagebank.domain.errors import NotFoundError
    from imagebank.services.clinical import ClinicalSummary, import_clinical

    job = context.job
    try:
        if not folder.is_dir():
            raise NotFoundError("The uploaded files of this clinical import are no longer in "
                                "the spool; upload them again.")
        context.progress(0, None, "importing", force=True)

        def report(summary: ClinicalSummary) -> None:
            context.progress(sum(summary.resources.values()), None,
                             f"{summary.patients:,} patients, {summary.facts:,} facts")

        summary = import_clinical(archive, [folder], job["project_id"],
                                  strict=bool(context.params.get("strict")), progress=report)
        read = sum(summary.resources.values())
        context.progress(read, read, "imported", force=True)
        prefix = f"{folder}{os.sep}"
        result = summary.as_dict()
        result["problem_list"] = [
            {"source": p.label.replace(prefix, ""), "reason": p.reason, "message": p.message}
            for p in summary.problems[:LISTED_PROBLEMS]]
        if not summary.ok:
            raise JobFailed(_failure(summary, result["problem_list"]), result)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _failure(summary: Any, listed: list[dict[str, str]]) -> str:
    """One line: how many problems of which kinds, the first, and what was imported."""
    count = sum(summary.reasons.values())
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(summary.reasons.items()))
    first = f"{listed[0]['source']}: {listed[0]['message']}" if listed else ""
    return (f"{count:,} problem{'s' if count != 1 else ''} in the upload ({reasons}); first: "
            f"{first}. The rest was imported ({summary.facts:,} facts of "
            f"{summary.patients:,} patients); correct the files and upload them again "
            "(nothing is imported twice).")
