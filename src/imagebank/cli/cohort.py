"""``imagebank cohort QUERY`` and ``imagebank codes import`` (issue 6, decision 0022).

The commands join the ``imagebank`` app when ``cli.main`` imports this module (at its end).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from imagebank.cli.main import (
    JsonOption,
    _cli_audit,
    _print_json,
    _runtime,
    _table,
    app,
    err,
    out,
    state,
)
from imagebank.domain.cohort import CohortQueryError
from imagebank.domain.errors import InvalidInputError

codes_app = typer.Typer(help="Code systems' is-a relations, for cohort queries' SYSTEM:<<CODE.",
                        no_args_is_help=True)
app.add_typer(codes_app, name="codes")

#: IDs listed by --ids at most, per level.
IDS_LIMIT = 10_000


@app.command()
def cohort(
    query: Annotated[str, typer.Argument(
        help="A cohort query, in quotes: condition\\[ICD10:C34*] within 90 days before "
        "imaging\\[modality = CT] (README, 'Cohort search').", show_default=False)],
    project: Annotated[str, typer.Option("--project", "-p", help="Project to search.")],
    exact: Annotated[bool, typer.Option(
        "--exact", help="Exact counts (a site's own project only; otherwise counts under the "
        "policy's smallest count are shown as '< N', and rounded).")] = False,
    ids: Annotated[bool, typer.Option(
        "--ids", help="Also list the subjects, studies and series (implies --exact).")
    ] = False,
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="A site's policy (YAML) whose smallest count and rounding the "
        "counts follow (a site's project; default: 10, no rounding).", show_default=False)
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Count the people (and their studies and series) a cohort query matches in a project.
    A query that does not parse is shown with a caret under the place, exit status 2."""
    from imagebank.services.archive import RESEARCH
    from imagebank.services.cohort import search
    from imagebank.services.policies import load_policy

    archive = state.open()
    exact = exact or ids
    site_policy = None
    if policy is not None:
        if archive.zone_of(project) == RESEARCH:
            raise InvalidInputError("A research project's counts follow its own policy; "
                                    "--policy is for a site's project.")
        site_policy = load_policy(policy)
    try:
        result = search(archive, project, query, exact=exact, limit=IDS_LIMIT if ids else 0,
                        policy=site_policy)
    except CohortQueryError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        for line in exc.pointer().splitlines():
            err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    _cli_audit(_runtime(), "cohort_search", project=project, detail=result.audit_detail())
    if as_json:
        _print_json(result.as_dict())
        return
    _print_result(result, ids)


def _print_result(result: Any, ids: bool) -> None:
    counts = (f"[bold]{escape(result.people.text)}[/] people, "
              f"[bold]{escape(result.studies.text)}[/] studies, "
              f"[bold]{escape(result.series.text)}[/] series")
    if result.exact:
        out.print(f"{counts} (exact).", highlight=False)
    else:
        rounding = f", rounded to {result.rounding}" if result.rounding != 1 else ""
        out.print(f"{counts} (counts under {result.smallest_count} are shown as "
                  f"'< {result.smallest_count}'{rounding}).", highlight=False)
    if not ids:
        return
    _table([{"id": s} for s in result.subject_ids], [("id", "subject")], "Subjects")
    _table(result.study_rows, [("id", "study"), ("subject_id", "subject"),
                               ("study_instance_uid", "StudyInstanceUID"),
                               ("study_date", "date"), ("modalities_in_study", "modalities")],
           "Studies")
    _table(result.series_rows, [("id", "series"), ("study_id", "study"),
                                ("series_instance_uid", "SeriesInstanceUID"),
                                ("modality", "modality")], "Series")
    if result.truncated:
        out.print(f"Lists stop at {IDS_LIMIT:,} rows each; --json gives the same.")


@codes_app.command("import")
def codes_import(
    path: Annotated[Path, typer.Argument(
        help="A SNOMED CT RF2 relationship file (sct2_Relationship*.txt), or a CSV with the "
        "header child,parent.", show_default=False)],
    system: Annotated[str, typer.Option(
        "--system", help="The code system of the codes: SNOMED, ICD10, DMD, LOINC ...")],
    as_json: JsonOption = False,
) -> None:
    """Load a code system's is-a relations (idempotent: an edge is added once; an RF2 file's
    retired is-a relationships are removed). Exit 1 when a line could not be read (each is
    named; the rest is loaded)."""
    from imagebank.services.codes import import_code_relations

    archive = state.open()
    summary = import_code_relations(archive, path, system)
    _cli_audit(_runtime(), "codes_import", level="codes", object_id=summary.system)
    for line in summary.problem_lines[:20]:
        err.print(f"{escape(line)}: not a relation this format can read; skipped",
                  highlight=False, soft_wrap=True)
    if as_json:
        _print_json(summary.as_dict())
    else:
        out.print(f"[bold]{summary.relations:,}[/] {summary.system} is-a relations in the file "
                  f"([bold]{summary.added:,}[/] new, {summary.removed:,} retired ones removed"
                  f", {summary.problems:,} lines skipped).", highlight=False)
    raise typer.Exit(1 if summary.problems else 0)
