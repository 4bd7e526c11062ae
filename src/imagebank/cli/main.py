"""The ``imagebank`` command line (Typer + Rich).

Every command opens the archive in the data folder (``--data``, ``IMAGEBANK_DATA``, or
``./imagebank-data``). Errors are one line that says what to do, never a traceback (set
``IMAGEBANK_DEBUG=1`` to see one); exit status 2 for errors.
"""

from __future__ import annotations

import contextlib
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
from imagebank.domain.errors import ConflictError, ImagebankError, InvalidInputError, NotFoundError
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
user_app = typer.Typer(help="Add and manage users (passwords are hashed with argon2id).",
                       no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="Read and verify the audit trail.", no_args_is_help=True)
ae_app = typer.Typer(help="Remote DICOM nodes imagebank sends to (C-MOVE destinations).",
                     no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")
app.add_typer(ls_app, name="ls")
app.add_typer(resource_app, name="resource")
app.add_typer(ae_app, name="ae")
policy_app = typer.Typer(help="Check, compare and harmonise sites' governance policies (YAML).",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

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


def _json_line(value: Any) -> None:
    """One JSON line on stdout (``--json``, ``--jsonl``), as it is: no markup, no wrapping."""
    out.print(json.dumps(value), markup=False, highlight=False, soft_wrap=True)


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
    ae_title: Annotated[str | None, typer.Option(
        "--ae-title", help="Called AE title whose C-STOREs land in this project.")] = None,
    research: Annotated[bool, typer.Option(
        "--research", help="A research project (the de-identified zone): it receives data "
        "only through `imagebank share`, under its policy.")] = False,
    policy: Annotated[list[Path] | None, typer.Option(
        "--policy", help="A site's policy (YAML); repeat for every site of the project: "
        "the project's policy is their strictest merge.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="A profile option the project's releases use (the policy must "
        "allow it); repeat for several.", show_default=False)] = None,
) -> None:
    """Create a project (identifiable by default; --research for the de-identified zone)."""
    from imagebank.services.archive import IDENTIFIABLE, RESEARCH
    from imagebank.services.nodes import Nodes, check_ae_title
    from imagebank.services.policies import project_policy

    archive = state.open()
    title = check_ae_title(ae_title) if ae_title else None  # refused before anything is made
    if (policy or option) and not research:
        raise InvalidInputError("--policy and --option are for a research project "
                                "(add --research).")
    policy_text = project_policy(policy or [], option or []) if research else None
    nodes = Nodes(archive.sessions)
    if title and nodes.project_of(title) is not None:
        raise ConflictError(f"Another project already has the AE title {title!r}.")
    project = archive.create_project(project_id, name, description,
                                     zone=RESEARCH if research else IDENTIFIABLE,
                                     policy=policy_text, options=option or [])
    if title:
        nodes.set_ae_title(project_id, title)
    what = "research project" if research else "project"
    out.print(f"Created {what} {project['id']}"
              + (f" (AE title {escape(title)})." if title else ".")
              + (f" Policy: the strictest merge of {len(policy)} site(s)." if policy else ""))


@project_app.command("ae")
def project_ae(
    project_id: Annotated[str, typer.Argument(help="Project ID.")],
    ae_title: Annotated[str | None, typer.Argument(
        help="The called AE title for it; omit to show the current one.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove its AE title.")] = False,
) -> None:
    """Show or set the called AE title that routes C-STOREs to a project."""
    from imagebank.services.nodes import Nodes

    archive = state.open()
    archive.ensure_project(project_id)
    nodes = Nodes(archive.sessions)
    if clear or ae_title:
        nodes.set_ae_title(project_id, None if clear else ae_title)
        _cli_audit(_runtime(), "set_ae_title", project=project_id)
    title = nodes.ae_title(project_id)
    out.print(f"{escape(project_id)}: AE title {escape(title) if title else '(none)'}")


@project_app.command("allow")
def project_allow(
    project_id: Annotated[str, typer.Argument(help="Project ID.")],
    calling_ae: Annotated[str, typer.Argument(help="Calling AE title of the sender.")],
    host: Annotated[str, typer.Option(help="Only from this address (default: any).")] = "",
) -> None:
    """Accept associations from a calling AE title (optionally from one address only)."""
    from imagebank.services.nodes import Nodes

    archive = state.open()
    Nodes(archive.sessions).allow(project_id, calling_ae, host)
    _cli_audit(_runtime(), "allow_ae", project=project_id)
    out.print(f"{escape(project_id)} accepts {escape(calling_ae.strip())}"
              + (f" from {escape(host)}." if host else " from any address."))


@project_app.command("disallow")
def project_disallow(project_id: Annotated[str, typer.Argument(help="Project ID.")],
                     calling_ae: Annotated[str, typer.Argument(help="Calling AE title.")]
                     ) -> None:
    """Stop accepting a calling AE title."""
    from imagebank.services.nodes import Nodes

    Nodes(state.open().sessions).disallow(project_id, calling_ae)
    _cli_audit(_runtime(), "disallow_ae", project=project_id)
    out.print(f"{escape(project_id)} no longer accepts {escape(calling_ae.strip())}.")


@project_app.command("callers")
def project_callers(project_id: Annotated[str | None, typer.Argument(
                        help="Project ID (default: all).")] = None,
                    as_json: JsonOption = False) -> None:
    """List the calling AE titles each project accepts."""
    from imagebank.services.nodes import Nodes

    rows = Nodes(state.open().sessions).callers(project_id)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("project_id", "project"), ("ae_title", "calling AE"), ("host", "from")],
           "Accepted calling AE titles")


# -- remote AEs ------------------------------------------------------------------------------
def _where(remote: dict[str, Any]) -> str:
    host = remote["host"]
    host = f"[{host}]" if ":" in host else host
    return f"{remote['ae_title']} at {host}:{remote['port']}"


@ae_app.command("add")
def ae_add(
    name: Annotated[str, typer.Argument(
        help="Its name here; also its AE title unless --ae-title is given.")],
    host: Annotated[str, typer.Argument(help="Its IP address or host name.")],
    port: Annotated[int, typer.Argument(help="Its DICOM port (1-65535).")],
    ae_title: Annotated[str | None, typer.Option(
        "--ae-title", help="Its AE title, when it differs from NAME.")] = None,
) -> None:
    """Add a remote AE: a destination C-MOVEs may name (MoveDestination = its AE title)."""
    from imagebank.services.nodes import Nodes

    remote = Nodes(state.open().sessions).add_remote(name, host, port, ae_title)
    _cli_audit(_runtime(), "add_remote_ae", object_id=remote["name"])
    out.print(f"Added remote AE {escape(remote['name'])}: {escape(_where(remote))}.",
              highlight=False)


@ae_app.command("list")
def ae_list(as_json: JsonOption = False) -> None:
    """List the remote AEs."""
    from imagebank.services.nodes import Nodes

    rows = Nodes(state.open().sessions).remotes()
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("name", "name"), ("ae_title", "AE title"), ("host", "host"),
                  ("port", "port"), ("created_at", "added")], "Remote AEs")


@ae_app.command("remove")
def ae_remove(name: Annotated[str, typer.Argument(help="The remote AE's name.")]) -> None:
    """Remove a remote AE: C-MOVEs to it are refused from then on."""
    from imagebank.services.nodes import Nodes

    Nodes(state.open().sessions).remove_remote(name)
    _cli_audit(_runtime(), "remove_remote_ae", object_id=name.strip())
    out.print(f"Removed remote AE {escape(name.strip())}.", highlight=False)


@ae_app.command("echo")
def ae_echo(
    name: Annotated[str, typer.Argument(help="The remote AE's name.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each step.")] = 10.0,
) -> None:
    """C-ECHO a remote AE (as the listener's AE title, IMAGEBANK_DICOM_AE_TITLE)."""
    from imagebank.dimse.query_retrieve import echo
    from imagebank.services.nodes import Nodes

    archive = state.open()
    remote = Nodes(archive.sessions).remote(name)
    result = echo(remote["host"], remote["port"], remote["ae_title"],
                  calling_ae_title=archive.settings.dicom_ae_title, timeout=max(0.1, timeout))
    if not result.ok:
        raise ImagebankError(f"C-ECHO to {remote['name']} ({_where(remote)}) failed: "
                             f"{result.reason}.", code="echo_failed")
    out.print(f"C-ECHO to {escape(remote['name'])} ({escape(_where(remote))}): ok in "
              f"{result.milliseconds:.0f} ms.", highlight=False)


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
    archive.admit(project)  # a research project refuses, before the progress bar starts
    for path in paths:  # before the progress bar starts, so the error is all that is printed
        if not path.exists():
            raise InvalidInputError(f"Nothing to ingest at {path}: no such file or folder.")
    progress: IngestProgress | JsonlProgress
    progress = JsonlProgress(out) if jsonl else IngestProgress(err)
    with progress:
        summary = archive.ingest(paths, project, progress=progress.update, workers=workers)
    if jsonl:
        _json_line({"event": "summary", **summary.as_dict()})
    else:
        _print_summary(summary)
    raise typer.Exit(0 if summary.ok else 1)


clinical_app = typer.Typer(help="Clinical data beside the images (HL7 FHIR R4).",
                           no_args_is_help=True)
app.add_typer(clinical_app, name="clinical")


@clinical_app.command("import")
def clinical_import(
    paths: Annotated[list[Path], typer.Argument(
        help="FHIR R4 bundles (.json) and bulk-export NDJSON files, or folders of them; with "
             "--mapping, CSV and Parquet tables.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project to import into.")],
    strict: Annotated[bool, typer.Option(
        "--strict", help="Validate every resource against the R4B models (slower).")] = False,
    mapping: Annotated[Path | None, typer.Option(
        "--mapping", help="A YAML mapping file: the inputs are CSV and Parquet tables whose "
        "columns it names (docs/clinical/mapping-example.yaml).")] = None,
    jsonl: JsonlOption = False,
) -> None:
    """Import clinical data (FHIR R4, or tables with --mapping) into a project, linked to its
    subjects by NHS number or local identifier. Exit 0 when every resource (or row) was read,
    1 when any was a problem (each is counted; the rest is imported)."""
    from imagebank.services.clinical import clinical_reader, import_with

    archive = state.open()
    archive.ensure_project(project)
    archive.admit(project)
    for path in paths:
        if not path.exists():
            raise InvalidInputError(f"Nothing to import at {path}: no such file or folder.")
    reader = clinical_reader(strict=strict, mapping=mapping)  # a mapping's errors, before the bar

    def report(summary: Any) -> None:
        if jsonl:
            _json_line({"event": "progress", **summary.as_dict()})
        else:
            bar.update(sum(summary.resources.values()), None,
                       f"{summary.patients:,} patients, {summary.facts:,} facts")

    if jsonl:
        summary = import_with(archive, reader, paths, project, progress=report)
    else:
        from imagebank.cli.progress import JobProgress

        with JobProgress(err, "clinical", unit="rows" if mapping else "resources") as bar:
            summary = import_with(archive, reader, paths, project, progress=report)
    _cli_audit(_runtime(), "clinical_import", project=project)
    if jsonl:
        for problem in summary.problems:
            _json_line({"event": "problem", "source": problem.label,
                        "reason": problem.reason, "message": problem.message})
        _json_line({"event": "summary", **summary.as_dict()})
    else:
        out.print(f"[bold]{summary.facts:,}[/] facts of [bold]{summary.patients:,}[/] patients "
                  f"({summary.added:,} new; {summary.linked:,} patients linked to subjects "
                  f"already there, {summary.new_subjects:,} new subjects).", highlight=False)
        for problem in summary.problems[:20]:
            err.print(f"{escape(problem.label)}: {problem.reason}: {escape(problem.message)}",
                      highlight=False, soft_wrap=True)
        if summary.reasons:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(summary.reasons.items()))
            out.print(f"Problems: {reasons}.", highlight=False)
    raise typer.Exit(0 if summary.ok else 1)


consent_app = typer.Typer(help="Patients' consent decisions for research (CSV).",
                          no_args_is_help=True)
app.add_typer(consent_app, name="consent")
optout_app = typer.Typer(help="The National Data Opt-out list (NHS numbers), by dated version.",
                         no_args_is_help=True)
app.add_typer(optout_app, name="optout")


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@consent_app.command("import")
def consent_import(
    path: Annotated[Path, typer.Argument(help="A CSV with the columns nhs_number (or "
                                         "patient_id and issuer), status (granted, refused, "
                                         "withdrawn), date, and optionally project, scope, "
                                         "source.")],
    as_json: JsonOption = False,
) -> None:
    """Import consent decisions. The file is taken whole or not at all; withdrawals flag the
    patient's data already in research projects and keep it out of every later release."""
    from imagebank.services.consent import import_consents

    result = import_consents(state.open(), path, actor=_os_user(), via="cli")
    if as_json:
        _json_line(result.as_dict())
        return
    by = ", ".join(f"{n:,} {s}" for s, n in sorted(result.by_status.items())) or "none"
    out.print(f"[bold]{result.records:,}[/] consent records of [bold]{result.people:,}[/] "
              f"patients ({result.added:,} new; {by}). Flagged as withdrawn: "
              f"{result.flagged_research:,} research subjects, {result.flagged_site:,} site "
              f"subjects; {result.cleared:,} flags cleared.", highlight=False)


@optout_app.command("import")
def optout_import(
    path: Annotated[Path, typer.Argument(help="NHS numbers, one per line (or a CSV with an "
                                         "nhs_number column); # starts a comment.")],
    list_date: Annotated[str | None, typer.Option(
        "--date", help="The date of the list, YYYY-MM-DD (default: today). The newest list "
        "applies to every later release.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import a version of the National Data Opt-out list (stored as keyed hashes)."""
    from datetime import date

    from imagebank.services.consent import import_optout

    when = None
    if list_date is not None:
        try:
            when = date.fromisoformat(list_date)
        except ValueError:
            raise InvalidInputError("--date must be a date, YYYY-MM-DD.") from None
    result = import_optout(state.open(), path, list_date=when, actor=_os_user(), via="cli")
    if as_json:
        _json_line(result)
        return
    state_word = "imported" if result["new"] else "already imported"
    out.print(f"Opt-out list of {result['list_date']} {state_word}: "
              f"[bold]{result['entries']:,}[/] NHS numbers, version {result['version']}.",
              highlight=False)


@optout_app.command("list")
def optout_list(as_json: JsonOption = False) -> None:
    """The imported versions of the opt-out list; the first is the one releases apply."""
    from imagebank.services.consent import optout_versions

    rows = optout_versions(state.open())
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("list_date", "list date"), ("entries", "NHS numbers"), ("id", "version"),
                  ("imported_at", "imported")], "National Data Opt-out lists")


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
    retry: Annotated[list[str] | None, typer.Option(
        "--retry", metavar="ID", help="Ingest this item's kept bytes again (the project's "
        "rules apply, as to a new file); repeat for several.", show_default=False)] = None,
    discard: Annotated[list[str] | None, typer.Option(
        "--discard", metavar="ID", help="Remove this item and its kept bytes; repeat for "
        "several.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """List what was received and not archived, with the reasons; or retry or discard items
    (exit 1 when a retried item is refused again)."""
    if retry or discard:
        _quarantine_actions(project, retry or [], discard or [], as_json)
        return
    rows = state.open().quarantine(project, limit=limit)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("id", "id"), ("project_id", "project"), ("reason", "reason"),
                  ("source", "source"), ("message", "message")], "Quarantine")


#: What ``quarantine --discard`` says of the item's bytes (services.quarantine.discard).
DISCARDED_BYTES = {"removed": " with its bytes", "none_kept": " (its bytes were not kept)",
                   "shared": " (its bytes are an archived instance's now, and stay)",
                   "left_for_repair": "; the store refused to remove its bytes: "
                                      "`imagebank check --repair` will"}


def _quarantine_actions(project: str | None, retry_ids: list[str], discard_ids: list[str],
                        as_json: bool) -> None:
    """``quarantine --retry/--discard``: each item in turn, audited as the API's routes are."""
    from imagebank.services import quarantine as items

    runtime = _runtime()
    archive = runtime.archive
    results: list[dict[str, Any]] = []
    refused = 0
    for item_id in retry_ids:
        item_project = items.get_item(archive, item_id, project)["project_id"]
        result = items.retry(archive, item_id, project)
        _cli_audit(runtime, "quarantine_retry", project=item_project, level="quarantine",
                   object_id=item_id, detail={"outcome": result.outcome.value})
        results.append({"action": "retry", **result.as_dict()})
        refused += not result.archived
        if not as_json:
            where = f" (study {result.study_id})" if result.study_id else ""
            out.print(f"{item_id}: {result.outcome.value}{where}. " if result.archived else
                      f"{item_id}: refused again ({result.reason}): ", end="",
                      markup=False, highlight=False)
            out.print(escape(result.message), highlight=False, soft_wrap=True)
    for item_id in discard_ids:
        item_project = items.get_item(archive, item_id, project)["project_id"]
        gone = items.discard(archive, item_id, project)
        _cli_audit(runtime, "quarantine_discard", project=item_project, level="quarantine",
                   object_id=item_id)
        results.append({"action": "discard", **gone.as_dict()})
        if not as_json:
            out.print(f"{item_id}: discarded{DISCARDED_BYTES[gone.bytes]}.", markup=False,
                      highlight=False)
    if as_json:
        _print_json(results)
    raise typer.Exit(1 if refused else 0)


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
        _json_line(counts)
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
        _json_line(report.as_dict())
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
        facts = (f", {counts['clinical_facts']} clinical facts" if counts.get("clinical_facts")
                 else "")
        out.print(f"  {project_id}: {counts['stored']} stored, {counts['duplicates']} already "
                  f"there, {counts['quarantined'] + counts['conflicts']} not stored{facts}")
    _list_projects(False)


# -- de-identification (issue 5, decision 0017) ----------------------------------------------
key_app = typer.Typer(help="De-identification keys in the data folder's key store (never "
                      "printed: a fingerprint tells them apart).", no_args_is_help=True)
app.add_typer(key_app, name="key")
KeyName = Annotated[str, typer.Argument(
    help="The key's name: a project ID, or 'default' (the key `deid` uses without one).")]


def _key_store() -> Any:
    from imagebank.settings import load_settings
    from imagebank.storage.keys import FileKeyStore

    settings = load_settings(**({"data": state.data} if state.data else {}))
    return FileKeyStore.in_data_folder(settings.data)


@app.command()
def deid(
    source: Annotated[Path, typer.Argument(
        metavar="IN", help="A folder of DICOM files (searched recursively, zip archives "
        "included), or one file.", show_default=False)],
    output: Annotated[Path, typer.Argument(
        metavar="OUT", help="The folder to write into: OUT/<patient pseudonym>/<study UID>/"
        "<series UID>/<SOP instance UID>.dcm, new UIDs; nothing of the input's names.",
        show_default=False)],
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="A site's policy (YAML): the options it allows, its safe-private "
        "list.", show_default=False)] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="The key: 32+ random bytes, raw, hex or base64, in a file only you "
        "can read (chmod 600). Default: the key store's.", show_default=False)] = None,
    project: Annotated[str | None, typer.Option(
        "--project", "-p", help="Use this project's key from the key store (default: the key "
        "'default'), creating it if there is none.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="A profile option, e.g. retain_long_modified_dates, clean_descriptors "
        "(repeat for several).", show_default=False)] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Processes.")] = 2,
    jsonl: Annotated[bool, typer.Option(
        "--jsonl", help="Print progress and every file not written as JSON lines.")] = False,
) -> None:
    """De-identify a folder of DICOM files into another (PS3.15 basic profile, keyed
    pseudonyms). A file is written only if the residual-identifier scan finds nothing in it.
    Exit 0 when every file was written, 1 when any was not (each is reported)."""
    from imagebank.cli.progress import DeidProgress, JsonlDeidProgress
    from imagebank.services.deid import (
        check_folders,
        choose_profile,
        deidentify_folder,
    )
    from imagebank.storage.keys import DEFAULT_NAME, fingerprint, get_or_create, read_key_file

    if key_file is not None and project is not None:
        raise InvalidInputError("Give --key-file or --project, not both.")
    check_folders(source, output)
    settings = choose_profile(option or [], policy)  # before any key is made
    if key_file is not None:
        key, where = read_key_file(key_file), f"key file {key_file}"
    else:
        name = project or DEFAULT_NAME
        store = _key_store()
        key, created = get_or_create(store, name)
        where = f"key {name!r}"
        if created:
            err.print(f"Created the de-identification key {escape(name)!r} in "
                      f"{escape(str(store.path(name)))} (fingerprint {fingerprint(key)}). Keep "
                      "it and keep it private: the same key gives the same pseudonyms.",
                      highlight=False, soft_wrap=True)
    config = settings.config(key)
    _cli_audit(_runtime(), "deid", project=project, level="key", object_id=fingerprint(key))
    progress: DeidProgress | JsonlDeidProgress
    progress = JsonlDeidProgress() if jsonl else DeidProgress(err)
    try:
        with progress:
            summary = deidentify_folder(source, output, config, workers=workers,
                                        progress=progress.update)
    except KeyboardInterrupt:
        err.print("interrupted: every file in OUT is whole; run the same command again to "
                  "finish (what is there already is kept).", highlight=False)
        raise typer.Exit(130) from None
    if jsonl:
        _json_line({"event": "summary", "key_fingerprint": fingerprint(key),
                    **summary.as_dict()})
    else:
        _print_deid_summary(summary, output, f"{where}, fingerprint {fingerprint(key)}")
    raise typer.Exit(0 if summary.ok else 1)


def _print_deid_summary(summary: Any, output: Path, key: str) -> None:
    not_written = summary.files - summary.written
    out.print(f"[bold]{summary.written:,}[/] of {summary.files:,} files written to "
              f"{escape(str(output))} ({summary.bytes_out / 1e6:,.1f} MB; "
              f"{summary.unchanged:,} were there already); {escape(key)}.", highlight=False)
    if not not_written:
        return
    counts = ", ".join(f"{n:,} {what}" for what, n in (
        ("refused", summary.refused), ("blocked by the residual-identifier scan",
                                       summary.blocked),
        ("unreadable", summary.unreadable), ("failed", summary.failed)) if n)
    reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(summary.reasons.items()))
    out.print(f"[bold]{not_written:,}[/] not written: {counts} ({reasons}).", highlight=False)
    table = Table(title="Not written", show_lines=False)
    table.add_column("source", overflow="fold")
    table.add_column("reason")
    table.add_column("what happened", overflow="fold")
    for problem in summary.problems[:50]:
        message = problem.message
        if problem.findings:
            message += " Found at: " + ", ".join(
                f"{f.path} ({f.kind})" for f in problem.findings[:10])
        table.add_row(escape(problem.source), problem.reason, escape(message))
    out.print(table)
    if not_written > 50:
        out.print(f"… and {not_written - 50:,} more (--jsonl lists them all).")


@key_app.command("create")
def key_create(name: KeyName,
               from_file: Annotated[Path | None, typer.Option(
                   "--from-file", help="Install this key (another site's key for a shared "
                   "project) instead of making a random one.", show_default=False)] = None
               ) -> None:
    """Make a project's de-identification key (32 random bytes), or install a shared one.
    A key is never replaced."""
    from imagebank.storage.keys import create, fingerprint, read_key_file

    store = _key_store()
    key = create(store, name, read_key_file(from_file) if from_file is not None else None)
    _cli_audit(_runtime(), "key_create", level="key", object_id=fingerprint(key))
    out.print(f"{'Installed' if from_file else 'Created'} the de-identification key "
              f"{escape(name)!r} in {escape(str(store.path(name)))}, fingerprint "
              f"{fingerprint(key)}.", highlight=False)


@key_app.command("fingerprint")
def key_fingerprint(name: KeyName) -> None:
    """Print a key's fingerprint (two sites with the same fingerprint hold the same key)."""
    from imagebank.storage.keys import check_name, fingerprint

    key = _key_store().get(check_name(name))
    if key is None:
        raise NotFoundError(f"There is no de-identification key {name!r}; `imagebank key "
                            "create` makes one (and `imagebank deid` makes 'default').")
    out.print(f"{escape(name)}: {fingerprint(key)}", highlight=False)


# -- share and export ------------------------------------------------------------------------
def _run_release_job(spec: Any, label: str, jsonl: bool) -> None:
    """Queue a share or export as a job (visible in the API), run it here with progress."""
    from imagebank.cli.interrupt import CtrlC
    from imagebank.cli.progress import JobProgress
    from imagebank.services.jobs import Jobs
    from imagebank.services.release import plan

    archive = state.open()
    resolved = plan(archive, spec)  # every refusal before the job exists
    jobs = Jobs(archive)
    job = jobs.submit(spec.kind, spec.source, spec.params(), None)
    _cli_audit(_runtime(), spec.kind, project=spec.source, level="job", object_id=job["id"])
    ended: dict[str, Any] | None = None
    stop = CtrlC()
    try:
        with stop:
            if jsonl:
                def report(done: int, total: int | None, message: str) -> None:
                    stop.check()  # a Ctrl-C stops the job here, between two steps
                    _json_line({"event": "progress", "job": job["id"], "done": done,
                                "total": total, "message": message})
                ended = jobs.run(job["id"], report)
            else:
                with JobProgress(err, label) as bar:
                    def update(done: int, total: int | None, message: str) -> None:
                        stop.check()
                        bar.update(done, total, message)
                    ended = jobs.run(job["id"], update)
    except KeyboardInterrupt:  # Ctrl-C twice: stopped wherever it was
        ended = None
    if ended is None or ended["state"] == "running":  # stopped by Ctrl-C
        with contextlib.suppress(ConflictError):  # ended meanwhile (a second Ctrl-C)
            jobs.cancel(job["id"])  # not left "running" for a server to run again
        err.print(f"interrupted: the {label} job {job['id']} is cancelled; what was released "
                  "is whole (a zip only once complete); run the same command again to finish.",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    if ended["state"] != "succeeded":
        raise ImagebankError(f"The {label} job {job['id']} {ended['state']}: "
                             f"{ended.get('error') or ended.get('message')}")
    result = ended["result"]
    if jsonl:
        _json_line({"event": "summary", "job": job["id"], **result})
    else:
        key = (f"; key fingerprint {resolved.key_fingerprint}"
               if resolved.key_fingerprint else "; sent as stored (already de-identified)")
        out.print(f"[bold]{result['written']:,}[/] of {result['files']:,} objects released "
                  f"({result['patients']:,} patients, {result['unchanged']:,} there "
                  f"already){key}. Manifest: {escape(str(archive.settings.data))}/releases/"
                  f"{job['id']}.json", highlight=False)
        if result["written"] != result["files"]:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(result["reasons"].items()))
            out.print(f"[bold]{result['files'] - result['written']:,}[/] not released "
                      f"({reasons}).", highlight=False)
        if "clinical" in result:
            _print_clinical(result["clinical"])
    raise typer.Exit(0 if result["ok"] else 1)


def _print_clinical(clinical: dict[str, Any]) -> None:
    tables = ", ".join(f"{name} {outcome}" for name, outcome in clinical["tables"].items())
    counted = ("" if clinical["facts"] is None else
               f"{clinical['facts']:,} facts of {clinical['patients']:,} patients; ")
    out.print(f"Clinical tables: {counted}{tables or 'none'}.", highlight=False)


StudyOption = Annotated[list[str] | None, typer.Option(
    "--study", help="Only this study (internal ID); repeat for several. Default: all.",
    show_default=False)]
SubjectOption = Annotated[list[str] | None, typer.Option(
    "--subject", help="Only this subject (internal ID): their studies (unless --study names "
    "them) and clinical data; repeat for several. Default: all.", show_default=False)]
ClinicalOption = Annotated[bool, typer.Option(
    "--clinical", help="Also the clinical tables (CSV and Parquet) of the subjects released, "
    "with their pseudonyms and shifted dates.")]
JsonlOption = Annotated[bool, typer.Option(
    "--jsonl", help="Print progress and the summary as JSON lines.")]


@app.command()
def share(
    source: Annotated[str, typer.Option(
        "--from", help="The identifiable project (a site's archive).", show_default=False)],
    target: Annotated[str, typer.Option(
        "--to", help="The research project: its policy, options and key apply.",
        show_default=False)],
    study: StudyOption = None,
    subject: SubjectOption = None,
    clinical: ClinicalOption = False,
    jsonl: JsonlOption = False,
) -> None:
    """De-identify a project's images (or some studies or subjects) into a research project,
    under the research project's policy and key, as a job with progress; with --clinical,
    their clinical tables too. Exit 1 when any object was not released (each reason is
    counted in the manifest)."""
    from imagebank.services.release import ReleaseSpec

    _run_release_job(ReleaseSpec("share", source, target, study_ids=tuple(study or ()),
                                 clinical=clinical, subject_ids=tuple(subject or ())),
                     "share", jsonl)


@app.command()
def export(
    project: Annotated[str, typer.Argument(help="The project to export.")],
    destination: Annotated[str, typer.Argument(
        metavar="DEST", help="A folder, a file ending .zip, a DICOMweb base URL "
        "(http://host/dicom-web), dicom://AET@host:port, or ae:NAME (see `imagebank ae`).",
        show_default=False)],
    policy: Annotated[list[Path] | None, typer.Option(
        "--policy", help="The sites' policies (YAML), merged strictest; for an identifiable "
        "project.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="A profile option (the policy must allow it).",
        show_default=False)] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", help="The key (default: the key store's 'default', or --key).",
        show_default=False)] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="A key of the key store by name (e.g. a project ID).",
        show_default=False)] = None,
    study: StudyOption = None,
    subject: SubjectOption = None,
    clinical: ClinicalOption = False,
    jsonl: JsonlOption = False,
) -> None:
    """Export a project through the de-identification pipeline (an identifiable project) or
    as stored (a research project, de-identified on the way in), with a manifest, as a job
    with progress; with --clinical, the clinical tables too (to a folder or zip)."""
    from imagebank.services.policies import project_policy
    from imagebank.services.release import ReleaseSpec, check_destination

    if key_file is not None and key is not None:
        raise InvalidInputError("Give --key-file or --key, not both.")
    archive = state.open()
    target = check_destination(archive, destination)
    text = project_policy(policy, option or []) if policy else None
    spec = ReleaseSpec("release", project, target, tuple(option or ()), text,
                       tuple(study or ()), str(key_file.resolve()) if key_file else None, key,
                       clinical, tuple(subject or ()))
    _run_release_job(spec, "export", jsonl)


@app.command("cohort-release")
def cohort_release(
    query: Annotated[str, typer.Argument(
        help="A cohort query, in quotes (as for `imagebank cohort`).", show_default=False)],
    project: Annotated[str, typer.Option(
        "--project", "-p", help="The identifiable project the query runs over.",
        show_default=False)],
    to: Annotated[str | None, typer.Option(
        "--to", help="Share into this research project (its policy, options and key).",
        show_default=False)] = None,
    destination: Annotated[str | None, typer.Option(
        "--out", metavar="DEST", help="Export instead: a folder or a file ending .zip (with "
        "--clinical), or any destination of `imagebank export`.", show_default=False)] = None,
    policy: Annotated[list[Path] | None, typer.Option(
        "--policy", help="An export's policies (YAML), merged strictest.",
        show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", help="An export's profile option (the policy must allow it).",
        show_default=False)] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="An export's key, by name in the key store (default: 'default').",
        show_default=False)] = None,
    clinical: ClinicalOption = False,
    jsonl: JsonlOption = False,
) -> None:
    """Release the people a cohort query matches: their images (only the matched studies
    when the query has imaging criteria) and, with --clinical, their clinical tables, shared
    into a research project (--to) or exported (--out), as a job; the manifest records the
    query."""
    from imagebank.domain.cohort import CohortQueryError
    from imagebank.services.cohort_release import cohort_spec
    from imagebank.services.policies import project_policy
    from imagebank.services.release import ReleaseSpec, check_destination

    if (to is None) == (destination is None):
        raise InvalidInputError("Give --to RESEARCH (a share) or --out DEST (an export).")
    archive = state.open()
    if to is not None:
        if policy or option or key:
            raise InvalidInputError("A share uses the research project's own policy, "
                                    "options and key; --policy, --option and --key are for "
                                    "--out.")
        spec = ReleaseSpec("share", project, to, clinical=clinical)
    else:
        assert destination is not None
        target = check_destination(archive, destination)
        text = project_policy(policy, option or []) if policy else None
        spec = ReleaseSpec("release", project, target, tuple(option or ()), text,
                           key_name=key, clinical=clinical)
    try:
        spec = cohort_spec(archive, spec, query)
    except CohortQueryError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        for line in exc.pointer().splitlines():
            err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _run_release_job(spec, "share" if to is not None else "export", jsonl)


# -- users, roles, tokens, audit, serve ---------------------------------------------------
def _runtime() -> Any:
    from imagebank.services.runtime import Runtime

    return Runtime.for_archive(state.open())


def _cli_audit(runtime: Any, action: str, *, project: str | None = None,
               level: str | None = None, object_id: str | None = None,
               detail: dict[str, Any] | None = None) -> None:
    """Administration from the command line is audited too (actor: the OS account)."""
    runtime.audit.admin_event(_os_user(), action, project_id=project, level=level,
                              object_id=object_id, detail=detail)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise InvalidInputError("No password on standard input.")
        return line.rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    if typer.prompt("Again", hide_input=True) != first:
        raise InvalidInputError("The two passwords differ.")
    return str(first)


PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of standard input.")]


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="Lowercase letters, digits, . _ -")],
    admin: Annotated[bool, typer.Option("--admin", help="A site administrator.")] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add a user. Passwords: 12+ characters, not a common one; passphrases welcome."""
    runtime = _runtime()
    password = _read_password(password_stdin)
    user = runtime.accounts.add_user(username, password, admin=admin)
    _cli_audit(runtime, "user_add", level="user", object_id=user["username"])
    out.print(f"Added {'administrator' if admin else 'user'} {escape(user['username'])}.")


@user_app.command("password")
def user_password(username: Annotated[str, typer.Argument()],
                  password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (their browser sessions end)."""
    runtime = _runtime()
    runtime.accounts.set_password(username, _read_password(password_stdin))
    _cli_audit(runtime, "user_password", level="user", object_id=username)
    out.print("Password changed.")


@user_app.command("disable")
def user_disable(username: Annotated[str, typer.Argument()],
                 enable: Annotated[bool, typer.Option("--enable", help="Enable again.")] = False
                 ) -> None:
    """Disable a user (sessions end, tokens stop working), or enable them again."""
    runtime = _runtime()
    runtime.accounts.set_active(username, enable)
    _cli_audit(runtime, "user_enable" if enable else "user_disable", level="user",
               object_id=username)
    out.print(f"{'Enabled' if enable else 'Disabled'} {escape(username)}.")


@user_app.command("list")
def user_list(as_json: JsonOption = False) -> None:
    """List users and their roles."""
    rows = _runtime().accounts.users()
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        row["roles"] = ", ".join(f"{p}:{r}" for p, r in sorted(row["roles"].items()))
    _table(rows, [("username", "user"), ("is_admin", "admin"), ("is_active", "active"),
                  ("roles", "roles"), ("last_login_at", "last sign-in")], "Users")


@project_app.command("grant")
def project_grant(
    project: Annotated[str, typer.Argument(help="Project ID.")],
    username: Annotated[str, typer.Argument(help="User.")],
    role: Annotated[str, typer.Argument(help="owner, member, collaborator or viewer.")],
) -> None:
    """Give a user a role on a project (replacing any role they had)."""
    runtime = _runtime()
    runtime.accounts.grant(project, username, role, by="cli")
    _cli_audit(runtime, "grant", project=project, level="user", object_id=username)
    out.print(f"{escape(username)} is now {escape(role.lower())} of {escape(project)}.")


@project_app.command("revoke")
def project_revoke(project: Annotated[str, typer.Argument()],
                   username: Annotated[str, typer.Argument()]) -> None:
    """Remove a user's role on a project."""
    runtime = _runtime()
    runtime.accounts.revoke(project, username)
    _cli_audit(runtime, "revoke", project=project, level="user", object_id=username)
    out.print(f"{escape(username)} has no role on {escape(project)} any more.")


@project_app.command("members")
def project_members(project: Annotated[str, typer.Argument()],
                    as_json: JsonOption = False) -> None:
    """Who has which role on a project."""
    state.open().ensure_project(project)
    rows = _runtime().accounts.members(project)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("username", "user"), ("role", "role"), ("granted_at", "since")],
           f"Members of {project}")


@token_app.command("create")
def token_create(
    username: Annotated[str, typer.Argument(help="Whose token.")],
    expires: Annotated[float, typer.Option(help="Days until it expires; 0: never.")] = 90,
    scope: Annotated[list[str] | None, typer.Option(
        help="read, write or admin; repeat for several (default read).")] = None,
    name: Annotated[str, typer.Option(help="What it is for.")] = "",
) -> None:
    """Create an API token and print it (once: only its hash is kept)."""
    runtime = _runtime()
    token, row = runtime.accounts.create_token(username, scopes=scope,
                                               expires_days=expires or None, name=name)
    _cli_audit(runtime, "token_create", level="token", object_id=row["id"])
    err.print(f"Token {row['id']} for {escape(row['username'])}, scopes "
              f"{', '.join(row['scopes'])}, expires {row['expires_at'] or 'never'}. "
              "It is shown once:", highlight=False)
    print(token)


@token_app.command("list")
def token_list(username: Annotated[str | None, typer.Argument()] = None,
               as_json: JsonOption = False) -> None:
    """List tokens (never their secret)."""
    rows = _runtime().accounts.tokens(username)
    if as_json:
        _print_json(rows)
        return
    for row in rows:
        row["scopes"] = ",".join(row["scopes"])
    _table(rows, [("id", "token"), ("name", "name"), ("scopes", "scopes"),
                  ("expires_at", "expires"), ("last_used_at", "last used"),
                  ("revoked_at", "revoked")], "API tokens")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's ID.")]) -> None:
    """Revoke a token at once."""
    runtime = _runtime()
    runtime.accounts.revoke_token(token_id)
    _cli_audit(runtime, "token_revoke", level="token", object_id=token_id)
    out.print(f"Revoked token {escape(token_id)}.")


@audit_app.command("verify")
def audit_verify(as_json: JsonOption = False) -> None:
    """Walk the whole audit chain: finds edited, inserted or deleted events (exit 1 if so)."""
    runtime = _runtime()
    with err.status("Verifying the audit chain...") as status:
        report = runtime.audit.verify(
            progress=lambda n: status.update(f"Verifying the audit chain: {n:,} events"))
    if as_json:
        _print_json({"ok": report.ok, "events": report.events, "problems": report.problems})
    elif report.ok:
        out.print(f"[green]ok[/]: {report.events:,} events, chain intact.")
    else:
        out.print(f"[red]broken[/]: {report.events:,} events, {len(report.problems)} problems:")
        for problem in report.problems:
            out.print(f"  {escape(problem)}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("ls")
def audit_ls(
    project: Annotated[str | None, typer.Option(help="Only this project's events.")] = None,
    since: Annotated[int, typer.Option(help="After this sequence number.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List audit events."""
    rows = _runtime().audit.events(project_id=project, since=since, limit=limit)
    if as_json:
        _print_json(rows)
        return
    _table(rows, [("seq", "#"), ("at", "when"), ("actor", "who"), ("via", "via"),
                  ("client", "from"), ("method", "method"), ("route", "what"),
                  ("project_id", "project"), ("object_id", "object"), ("status", "status"),
                  ("outcome", "outcome")], "Audit events")


# -- governance policies (decision 0016) -----------------------------------------------------
PolicyFile = Annotated[Path, typer.Argument(help="A policy file (YAML).", show_default=False)]


@policy_app.command("show")
def policy_show(path: PolicyFile, as_json: JsonOption = False) -> None:
    """Validate a policy and print it normalised (exit 2 with every problem if invalid)."""
    from imagebank.services import policies

    policy = policies.load_policy(path)
    if as_json:
        _print_json(policies.policy_document(policy))
    else:
        sys.stdout.write(policies.render_policy(policy, header=[f"{path}: valid"]))


@policy_app.command("harmonise")
def policy_harmonise(
    paths: Annotated[list[Path], typer.Argument(help="The sites' policy files.",
                                                show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Also write the merged policy to this file.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The strictest merge of several sites' policies, with the site(s) that set each rule."""
    from imagebank.services import policies

    names = [str(p) for p in paths]
    harmonised, _ = policies.harmonise_files(paths)
    text = policies.render_harmonised(harmonised, names)
    if output is not None:
        try:
            policies.write_text_atomically(output, text)
        except OSError as exc:
            raise InvalidInputError(f"Cannot write {output}: {exc.strerror or exc}.") from None
    if as_json:
        _print_json(policies.harmonised_document(harmonised, names))
    else:
        sys.stdout.write(text)


@policy_app.command("diff")
def policy_diff(a: PolicyFile, b: PolicyFile, as_json: JsonOption = False) -> None:
    """What B allows that A does not, and A that B does not (exit 1 if any, as diff does)."""
    from imagebank.domain.policy import PolicyError, diff
    from imagebank.services import policies

    loaded, problems = [], list[str]()
    for path in (a, b):
        try:
            loaded.append(policies.load_policy(path))
        except PolicyError as exc:
            problems += exc.problems
    if problems:
        raise PolicyError(problems)
    result = diff(loaded[0], loaded[1])
    if as_json:
        _print_json(policies.diff_document(result, str(a), str(b)))
    elif result.same:
        out.print("The two policies allow the same.")
    else:
        rows = [{"rule": x.rule, "looser": "B", "what": x.detail} for x in result.b_allows]
        rows += [{"rule": x.rule, "looser": "A", "what": x.detail} for x in result.a_allows]
        _table(rows, [("rule", "rule"), ("looser", "allowed by"), ("what", "what")],
               f"What one policy allows and the other does not (A = {a}, B = {b})")
    if not result.same:
        raise typer.Exit(1)


@app.command()
def scp(
    host: Annotated[str | None, typer.Option(help="Address (default IMAGEBANK_HOST).")] = None,
    port: Annotated[int | None, typer.Option(
        help="Port (default IMAGEBANK_DICOM_PORT or 11112).")] = None,
    ae_title: Annotated[str | None, typer.Option(
        "--ae-title", help="The listener's own AE title (IMAGEBANK_DICOM_AE_TITLE).")] = None,
) -> None:
    """Run the DICOM listener alone (C-ECHO, C-STORE) until interrupted."""
    import signal
    import threading

    from imagebank.dimse.scp import DicomListener

    runtime = _runtime()
    settings = runtime.archive.settings
    listener = DicomListener(runtime, host or settings.host,
                             port if port is not None else (settings.dicom_port or 11112),
                             ae_title or settings.dicom_ae_title)
    runtime.start(run_jobs=False)
    listener.start()
    err.print(f"DICOM listener {escape(listener.ae.ae_title)} on {listener.host}:"
              f"{listener.port}; Ctrl-C stops it.", highlight=False)
    # SIGTERM (systemd, docker stop, kill) stops it as Ctrl-C does: the associations that
    # just ended get their audit events written before the process exits.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        threading.Event().wait()
    finally:
        listener.stop()
        runtime.stop()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (IMAGEBANK_HOST; "
                                             "default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (IMAGEBANK_PORT; default 8470).")
                    ] = None,
    demo_admin: Annotated[bool, typer.Option(
        "--demo-admin", help="Create (or reset) user 'admin' with a new random password and "
        "print it; loopback only.")] = False,
    workers: Annotated[int | None, typer.Option(
        help="Server processes (IMAGEBANK_SERVER_WORKERS; default 1).")] = None,
    dicom_port: Annotated[int | None, typer.Option(
        help="Also run the DICOM listener on this port (IMAGEBANK_DICOM_PORT).")] = None,
) -> None:
    """Run the server: REST API under /api/v1, its documentation at /api/docs."""
    from imagebank.api.server import serve_archive

    archive = state.open()
    serve_archive(archive, host=host or archive.settings.host,
                  port=port or archive.settings.port, demo_admin=demo_admin, console=err,
                  workers=workers, dicom_port=dicom_port)


# `imagebank cohort` and `imagebank codes`: their module adds them to `app` when imported.
import imagebank.cli.cohort  # noqa: E402, F401


def main() -> None:
    """Entry point: run the app, turning errors into one readable line."""
    try:
        app()
    except ImagebankError as exc:
        for line in exc.message.splitlines() or [""]:  # a policy's problems: one line each
            err.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
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
