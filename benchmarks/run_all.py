"""imagebank's benchmarks, side by side: ingest throughput against ``cp -r && sync`` and
Orthanc, peak memory of an ingest against corpus size, study search on a large index, REST
upload against Orthanc's, study listing through the server, the DICOM network services
and DICOMweb against Orthanc's, de-identification against dicognito, the clinical import's
throughput against parsing alone, and cohort search at national scale against hand-written
SQL, and the series viewer in Chromium.

    python benchmarks/run_all.py            # full sizes (docs/benchmarks.md): ~15 min once cached
    python benchmarks/run_all.py --smoke    # tiny sizes, < 2 min: run by `make test`

Exit status: 0 when every benchmark ran and checked its own result (e.g. that every instance
was stored); 1 when something is broken. A missed performance target is reported in the
table, not by the exit status. Results are also written as JSON to
``benchmarks/.work/results-{smoke,full}.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import api_listing
import clinical_import
import clinical_release
import cohort_scale
import deid
import dicom_network
import index_queries
import ingest_throughput
import memory
import rest_upload
import viewer
from common import (
    RUNS,
    WORK,
    CorpusSpec,
    Result,
    can_drop_caches,
    format_markdown,
    format_table,
    machine_info,
    remove,
)

PARTS = ["ingest", "memory", "index", "rest", "listing", "dicom", "deid", "clinical", "cohort",
         "tables", "viewer"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="rounds of the ingest and REST upload comparisons (default: 3, "
                             "smoke: 1)")
    parser.add_argument("--warm", action="store_true",
                        help="do not drop the page cache before each ingest (default: drop "
                             "it when running as root, in full mode)")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--postgres-url", default=None,
                        help="also measure the clinical import and cohort search on this "
                             "PostgreSQL server ('auto': a throwaway cluster)")
    args = parser.parse_args(argv)

    smoke = args.smoke
    cold = not args.warm and not smoke and can_drop_caches()
    repeat = args.repeat or (1 if smoke else 3)
    only = set(args.only or PARTS)
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    info["orthanc"] = ingest_throughput.orthanc_version() or "not installed"
    mode = "smoke" if smoke else "full"
    print(f"imagebank benchmarks ({mode}; page cache {'dropped' if cold else 'warm'}): "
          + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)

    results: list[Result] = []
    broken: list[str] = []
    started = time.monotonic()

    def run(name: str, fn: object) -> None:
        print(f"\n== {name}", flush=True)
        t0 = time.monotonic()
        try:
            results.extend(fn())  # type: ignore[operator]
        except Exception:
            broken.append(name)
            traceback.print_exc()
        print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)

    if "ingest" in only:
        spec = CorpusSpec(200, 64, 64) if smoke else CorpusSpec(5000)
        run("(a) ingest throughput", lambda: ingest_throughput.measure(
            spec, cold=cold, repeat=repeat, with_orthanc=not args.no_orthanc,
            quiet_wait=0 if smoke else 120))
    if "memory" in only:
        small, large = ((CorpusSpec(200, 64, 64), CorpusSpec(2000, 64, 64)) if smoke
                        else (CorpusSpec(5000, 64, 64), CorpusSpec(50000, 64, 64)))
        run("(b) peak memory against corpus size", lambda: memory.measure(small, large))
    if "index" in only:
        n = 20_000 if smoke else 1_000_000
        run("(c) study search on a large index", lambda: index_queries.measure(n))
    if "rest" in only:
        upload = rest_upload.smoke_spec() if smoke else rest_upload.full_spec()
        run("(d) REST upload against Orthanc", lambda: rest_upload.measure(
            upload, cold=cold, repeat=repeat, with_orthanc=not args.no_orthanc,
            quiet_wait=0 if smoke else 120))
    if "listing" in only:
        studies = 2_000 if smoke else 100_000
        run("(e) study listing through the server", lambda: api_listing.measure(
            studies, quiet_wait=0 if smoke else 120))
    if "dicom" in only:
        network = dicom_network.smoke_spec() if smoke else dicom_network.full_spec()
        run("(f) DICOM network and DICOMweb against Orthanc", lambda: dicom_network.measure(
            network, only=set(dicom_network.PARTS), with_orthanc=not args.no_orthanc,
            index_instances=20_000 if smoke else 1_000_000, quiet_wait=0 if smoke else 60))
    if "deid" in only:
        corpus = deid.smoke_spec() if smoke else deid.full_spec()
        run("(g) de-identification against dicognito", lambda: deid.measure(
            corpus, cold=cold, repeat=repeat, quiet_wait=0 if smoke else 120))
    if "clinical" in only:
        run("(h) clinical import throughput", lambda: clinical_import.measure(
            2 if smoke else 25, repeat=1 if smoke else repeat, postgres_url=args.postgres_url,
            quiet_wait=0 if smoke else 60))
    if "cohort" in only:
        run("(i) cohort search at national scale", lambda: cohort_scale.measure(
            2_000 if smoke else 100_000, postgres_url=args.postgres_url))
    if "tables" in only:
        run("(j) clinical tables in releases", lambda: clinical_release.main(
            (["--smoke"] if smoke else [])
            + (["--postgres-url", args.postgres_url] if args.postgres_url else [])))
    if "viewer" in only:
        run("(k) the series viewer in Chromium", lambda: viewer.measure(
            *((20, 128) if smoke else (300, 512)), rounds=2 if smoke else viewer.ROUNDS,
            quiet_wait=0 if smoke else 120))
    remove(RUNS)

    print(f"\n== results ({mode}, {time.monotonic() - started:.0f} s)")
    print(format_markdown(results) if args.markdown else format_table(results))
    missed = [f"{r.group}: {r.name}" for r in results if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) missed (reported, not an error):")
        for m in missed:
            print(f"  - {m}")
    out = WORK / f"results-{mode}.json"
    out.write_text(json.dumps({
        "mode": mode, "page_cache": "dropped" if cold else "warm", "machine": info,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": [dataclasses.asdict(r) for r in results],
        "broken": broken,
    }, indent=2, default=str))
    print(f"\n(results written to {out})")
    if broken:
        print(f"BROKEN: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
