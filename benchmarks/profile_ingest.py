"""Where an ingest spends its time, per instance: an ingest with ``workers=1`` (everything in
this process) under cProfile, its cost split into the steps of the pipeline.

    python benchmarks/profile_ingest.py [--files 1000] [--top 25]

The corpus is the cached 512x512 CT corpus of the throughput benchmark (generated if missing),
read warm (a first untimed pass fills the page cache). cProfile slows Python code down, so the
table gives each step's share as well; the wall time of the same ingest without the profiler
is printed first.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CorpusSpec, corpus_files, ensure_corpus, fresh_run_dir, remove

#: (step, (file suffix, function name)) whose cumulative time is the step's; the steps nest
#: (a step's own time is its cumulative time less the steps listed inside it).
STEPS: list[tuple[str, str, str]] = [
    ("read the file", "imagebank/ingest/worker.py", "read_file"),
    ("pydicom dcmread (header only)", "pydicom/filereader.py", "dcmread"),
    ("structural checks (part10 walk)", "imagebank/dicom/part10.py", "check_elements_complete"),
    ("indexed values (header.extract_values)", "imagebank/dicom/header.py", "extract_values"),
    ("DICOM JSON (dicomjson.dataset_to_json)", "imagebank/dicom/dicomjson.py", "dataset_to_json"),
    ("json text of the DICOM JSON", "json/encoder.py", "encode"),
    ("sha256", "imagebank/storage/base.py", "sha256_hex"),
    ("staging write (stage, less sha256)", "imagebank/storage/local.py", "stage"),
    ("publish: syncfs + rename", "imagebank/storage/local.py", "publish"),
    ("commit: index SQL + fsync (commit, less publish)", "imagebank/ingest/pipeline.py", "commit"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    total = 0.0
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        if function == name and filename.endswith(suffix):
            total += row[3]
    return total


def _ingest(corpus: Path, files: int, profile: bool) -> tuple[float, pstats.Stats | None]:
    from imagebank.services.archive import Archive

    run = fresh_run_dir("profile")
    subset = run / "corpus"
    subset.mkdir()
    for n, path in enumerate(corpus_files(CorpusSpec(5000))[:files]):
        (subset / f"{n:06d}.dcm").symlink_to(path)
    try:
        archive = Archive.open(run / "data", workers=1)
        archive.create_project("bench")
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        summary = archive.ingest([subset], "bench", workers=1)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        archive.close()
        if summary.stored != files:
            raise RuntimeError(f"stored {summary.stored} of {files}")
        return elapsed, pstats.Stats(profiler) if profiler else None
    finally:
        remove(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--top", type=int, default=0, help="also print cProfile's top N")
    args = parser.parse_args()
    spec = CorpusSpec(5000)
    ensure_corpus(spec)
    for path in corpus_files(spec)[: args.files]:
        path.read_bytes()  # warm the page cache
    wall, _ = _ingest(spec.path, args.files, profile=False)
    print(f"ingest of {args.files} instances, workers=1, no profiler: {wall:.2f} s, "
          f"{wall / args.files * 1000:.2f} ms per instance")
    profiled_wall, stats = _ingest(spec.path, args.files, profile=True)
    assert stats is not None
    cumulative = {label: _cumulative(stats, suffix, name) for label, suffix, name in STEPS}
    own = dict(cumulative)
    own["staging write (stage, less sha256)"] -= cumulative["sha256"]
    own["commit: index SQL + fsync (commit, less publish)"] -= cumulative[
        "publish: syncfs + rename"]
    listed = sum(own.values())
    own["other (listing files, IDs, queueing, ...)"] = profiled_wall - listed
    print(f"under cProfile: {profiled_wall:.2f} s\n")
    width = max(len(k) for k in own)
    print(f"{'step':{width}}  ms/instance  share")
    for label, seconds in own.items():
        print(f"{label:{width}}  {seconds / args.files * 1000:11.3f}  "
              f"{seconds / profiled_wall:5.1%}")
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
