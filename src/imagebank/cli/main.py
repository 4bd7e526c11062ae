"""The ``imagebank`` command line (Typer + Rich).

Every command opens the archive in the data folder (``--data``, ``IMAGEBANK_DATA``, or
``./imagebank-data``). Errors are one line that says what to do, never a traceback (set
``IMAGEBANK_DEBUG=1`` to see one); exit status 2 for errors.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from imagebank.cli.progress import IngestProgress, JsonlProgress
from imagebank.domain.errors import ImagebankError, InvalidInputError, NotFoundError
from imagebank.services.archive import Archive

app = typer.Typer(
    name="imagebank",
    help="imagebank: an imaging research archive. DICOM in, indexed, checked, kept safe.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
project_app = typer.Typer(help="Create and list projects.", no_args_is_help=True)
ls_app = typer.Typer(help="List projects, subjects, studies, series or instances.",
                     no_args_is_help=True)
resource_app = typer.Typer(help="Attach non-DICOM files (NIfTI, reports) to the archive.",
                           no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(ls_app, name="ls")
app.add_typer(resource_app, name="resource")

out = Console()
err = Console(stderr=True)


class State:
    data: Path | None = None
    archive: Archive | None = None

    def open(self) -> Archive:
        if self.archive is None:
            self.archive = Archive.open(self.data)
        return self.archive


state = State()

DataOption = Annotated[
    Path | None,
    typer.Option("--data", envvar="IMAGEBANK_DATA",
                 help="The data folder (default ./imagebank-data).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def _main(data: DataOption = None) -> None:
    state.data = data


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str))


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str) -> None:
    table = Table(title=title, show_lines=False)
    for _, header in columns:
        table.add_column(header, overflow="fold")
    for row in rows:
        # Values (DICOM attributes, file names) are text, never Rich markup.
        table.add_row(*["" if row.get(k) is None else escape(str(row.get(k)))
                        for k, _ in columns])
    out.print(table)


# -- init, projects ------------------------------------------------------------------------
@app.command()
def init() -> None:
    """Create the data folder and its index (safe to run again)."""
    archive = state.open()
    out.print(f"Archive ready: index {archive.engine.url.render_as_string(hide_password=True)}, "
              f"objects {archive.store.location}")


@project_app.command("create")
def project_create(
    project_id: Annotated[str, typer.Argument(help="Short ID: lowercase letters, digits, - _")],
    name: Annotated[str | None, typer.Option(help="A readable name.")] = None,
    description: Annotated[str, typer.Option(help="What the project is for.")] = "",
) -> None:
    """Create a project."""
    project = state.open().create_project(project_id, name, description)
    out.print(f"Created project {project['id']}.")


@project_app.command("list")
def project_list(as_json: JsonOption = False) -> None:
    """List projects with their counts."""
    _list_projects(as_json)


def _list_projects(as_json: bool) -> None:
    rows = state.open().projects()
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "project"), ("name", "name"), ("subjects", "subjects"),
                  ("studies", "studies"), ("series", "series"), ("instances", "instances"),
                  ("size_bytes", "bytes")], "Projects")


# -- ingest --------------------------------------------------------------------------------
@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders and .zip archives.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project to ingest into.")],
    workers: Annotated[int | None, typer.Option(help="Parse processes (default: cores).")] = None,
    jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="Print progress as JSON lines (one per committed batch).")] = False,
) -> None:
    """Ingest DICOM files into a project. Exit 0 if all were stored or duplicates, 1 if any
    was quarantined or in conflict (everything else is still stored)."""
    archive = state.open()
    archive.ensure_project(project)
    for path in paths:  # before the progress bar starts, so the error is all that is printed
        if not path.exists():
            raise InvalidInputError(f"Nothing to ingest at {path}: no such file or folder.")
    progress: IngestProgress | JsonlProgress
    progress = JsonlProgress(out) if jsonl else IngestProgress(err)
    with progress:
        summary = archive.ingest(paths, project, progress=progress.update, workers=workers)
    if jsonl:
        out.print(json.dumps({"event": "summary", **summary.as_dict()}), markup=False,
                  highlight=False, soft_wrap=True)
    else:
        _print_summary(summary)
    raise typer.Exit(0 if summary.ok else 1)


def _print_summary(summary: Any) -> None:
    out.print(
        f"[bold]{summary.stored}[/] stored ({summary.bytes_stored / 1e6:,.1f} MB), "
        f"[bold]{summary.duplicates}[/] duplicates, [bold]{summary.conflicts}[/] conflicts, "
        f"[bold]{summary.quarantined}[/] quarantined."
    )
    if summary.reasons:
        table = Table(title="Not stored", show_lines=False)
        table.add_column("source", overflow="fold")
        table.add_column("reason")
        table.add_column("what to do", overflow="fold")
        for source, reason, message in summary.problems[:50]:
            table.add_row(escape(source), reason, escape(message))
        out.print(table)
        if len(summary.problems) > 50:
            out.print(f"… and {summary.total - summary.stored - summary.duplicates - 50} more; "
                      "see `imagebank quarantine`.")


@app.command()
def quarantine(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List what was received and not archived, with the reasons."""
    rows = state.open().quarantine(project, limit=limit)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "id"), ("project_id", "project"), ("reason", "reason"),
                  ("source", "source"), ("message", "message")], "Quarantine")


# -- listing -------------------------------------------------------------------------------
@ls_app.command("projects")
def ls_projects(as_json: JsonOption = False) -> None:
    """Projects with their counts."""
    _list_projects(as_json)


@ls_app.command("subjects")
def ls_subjects(
    project: Annotated[str, typer.Option("--project", "-p")],
    limit: Annotated[int, typer.Option()] = 100,
    offset: Annotated[int, typer.Option()] = 0,
    as_json: JsonOption = False,
) -> None:
    """Subjects (patients) of a project."""
    archive = state.open()
    archive.ensure_project(project)
    rows = archive.subjects(project, limit=limit, offset=offset)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "subject"), ("patient_id", "PatientID"),
                  ("issuer_of_patient_id", "Issuer"), ("patient_name", "PatientName"),
                  ("num_studies", "studies")], f"Subjects of {project}")


@ls_app.command("studies")
def ls_studies(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    patient_id: Annotated[str | None, typer.Option(help="Exact PatientID.")] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="StudyDate from (YYYYMMDD).")
                         ] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="StudyDate to (YYYYMMDD).")] = None,
    modality: Annotated[str | None, typer.Option(help="A modality in the study.")] = None,
    limit: Annotated[int, typer.Option()] = 100,
    offset: Annotated[int, typer.Option()] = 0,
    as_json: JsonOption = False,
) -> None:
    """Studies, newest first."""
    archive = state.open()
    if project:
        archive.ensure_project(project)
    rows = archive.studies(project, limit=limit, offset=offset, patient_id=patient_id,
                           study_date_from=date_from, study_date_to=date_to, modality=modality)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "study"), ("project_id", "project"), ("patient_id", "PatientID"),
                  ("study_date", "StudyDate"), ("modalities_in_study", "modalities"),
                  ("study_description", "description"), ("num_series", "series"),
                  ("num_instances", "instances")], "Studies")


@ls_app.command("series")
def ls_series(study: Annotated[str, typer.Argument(help="Internal study ID.")],
              as_json: JsonOption = False) -> None:
    """Series of a study."""
    archive = state.open()
    archive.get("study", study)
    rows = archive.series(study)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "series"), ("series_number", "#"), ("modality", "modality"),
                  ("series_description", "description"), ("manufacturer", "manufacturer"),
                  ("num_instances", "instances")], "Series")


@ls_app.command("instances")
def ls_instances(series: Annotated[str, typer.Argument(help="Internal series ID.")],
                 as_json: JsonOption = False) -> None:
    """Instances of a series."""
    archive = state.open()
    archive.get("series", series)
    rows = archive.instances(series)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "instance"), ("instance_number", "#"), ("sop_class_uid", "SOP class"),
                  ("transfer_syntax_uid", "transfer syntax"), ("size_bytes", "bytes")],
           "Instances")


@app.command()
def show(
    uid: Annotated[str, typer.Argument(help="A Study/Series/SOP Instance UID or an internal ID.")],
    as_json: JsonOption = False,
) -> None:
    """Show a study, series or instance by UID or internal ID."""
    archive = state.open()
    found = archive.find(uid)
    if not found:
        for level in ("subject", "study", "series", "instance"):
            try:
                found.append((level, archive.get(level, uid)))
            except NotFoundError:
                continue
    if not found:
        raise NotFoundError("Nothing in the archive has this UID or ID.")
    for _, row in found:
        row.pop("metadata_json", None)
    if as_json:
        _print_json([{"level": level, **row} for level, row in found])
        return
    for level, row in found:
        table = Table(title=f"{level} {row['id']}", show_header=False)
        table.add_column("attribute")
        table.add_column("value", overflow="fold")
        for key, value in row.items():
            if value not in (None, ""):
                table.add_row(key, escape(str(value)))
        out.print(table)


@app.command()
def stats(as_json: JsonOption = False) -> None:
    """Counts of everything in the archive."""
    counts = state.open().stats()
    if as_json:
        out.print(json.dumps(counts), markup=False, highlight=False, soft_wrap=True)
        return
    for key, value in counts.items():
        out.print(f"{key:>12}: {value}")


@app.command()
def check(
    repair: Annotated[bool, typer.Option(help="Index orphan objects again, drop dangling rows, "
                                         "remove stale staging files.")] = False,
    verify_checksums: Annotated[bool, typer.Option(help="Read every object and compare its "
                                                   "SHA-256 with the index.")] = False,
    staging_age: Annotated[float, typer.Option(help="With --repair, remove staging files "
                                               "older than this many seconds.")] = 3600.0,
    as_json: JsonOption = False,
) -> None:
    """Verify the index and the object store against each other. Exit 0 when they agree."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    archive = state.open()
    with Progress(SpinnerColumn(), TextColumn("[bold]check[/] {task.description}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("index")

        def show(phase: str, done: int) -> None:
            what = "index rows" if phase == "index" else "stored objects"
            bar.update(task, description=f"{done:,} {what}")

        report = archive.check(repair=repair, verify_checksums=verify_checksums,
                               staging_age=staging_age, progress=show)
    if as_json:
        out.print(json.dumps(report.as_dict()), markup=False, highlight=False, soft_wrap=True)
    else:
        for key, value in report.as_dict().items():
            out.print(f"{key:>24}: {value}")
    raise typer.Exit(0 if report.ok else 1)


@resource_app.command("add")
def resource_add(
    file: Annotated[Path, typer.Argument(help="The file to attach.", exists=True,
                                         dir_okay=False)],
    project: Annotated[str, typer.Option("--project", "-p")],
    level: Annotated[str, typer.Option(help="project, subject, study or series")] = "project",
    parent: Annotated[str | None, typer.Option(help="Internal ID of the subject, study or "
                                               "series (default: the project).")] = None,
    content_type: Annotated[str, typer.Option()] = "application/octet-stream",
) -> None:
    """Attach a file (NIfTI, a segmentation, a report) to a project, subject, study or series."""
    row = state.open().add_resource(project, level, parent or project, file.name,
                                    file.read_bytes(), content_type)
    out.print(f"Stored resource {row['id']} ({row['size_bytes']:,} bytes).")


@app.command()
def demo(
    studies: Annotated[int, typer.Option(help="Synthetic studies to generate.")] = 6,
    shared: Annotated[Path | None, typer.Option(help="The shared test data folder.")] = None,
) -> None:
    """Build a demo archive from synthetic studies and the shared public test data."""
    from imagebank.services.demo import build_demo

    archive = state.open()
    with IngestProgress(err) as progress:
        summary = build_demo(archive, studies=studies, shared=shared, progress=progress.update)
    out.print(f"Demo archive in [bold]{escape(str(archive.settings.data))}[/]:")
    for project_id, counts in summary.items():
        out.print(f"  {project_id}: {counts['stored']} stored, {counts['duplicates']} already "
                  f"there, {counts['quarantined'] + counts['conflicts']} not stored")
    _list_projects(False)


def main() -> None:
    """Entry point: run the app, turning errors into one readable line."""
    try:
        app()
    except ImagebankError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: what was reported stored is safe; run `imagebank check`.")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("IMAGEBANK_DEBUG"):
            raise
        err.print(f"[red]internal error[/] ({type(exc).__name__}); set IMAGEBANK_DEBUG=1 to see "
                  "the traceback.", highlight=False, soft_wrap=True)
        sys.exit(3)
    finally:
        if state.archive is not None:
            state.archive.close()
            state.archive = None  # main() can run again in the same process (tests, embedding)
