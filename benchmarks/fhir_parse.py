"""FHIR R4 parsing alone (issue 6, decision 0020): resources per second of ``ingest.fhir``.

The synthea bundles (../shared/data/synthea-fhir-r4) and bulk NDJSON (synthea-bulk-ndjson-10)
are copied ``--copies`` times into a folder in /dev/shm (so the page cache, not the disk, is
read), then read whole; the best of ``--repeat`` runs is reported for:

* ``json only``: ``json.loads`` of every line or file, the floor;
* ``default``: ``FhirReader()`` (fields read from the dicts and checked);
* ``strict``: ``FhirReader(strict=True)`` (each supported resource through its R4B model too).

No database: the import's target (20,000 resources/s) includes writing; parsing should leave
it room. Run: ``python benchmarks/fhir_parse.py [--copies 20] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from imagebank.ingest.fhir import FhirReader

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def _copy(folder: Path, copies: int) -> tuple[list[Path], list[Path]]:
    bundles: list[Path] = []
    ndjson: list[Path] = []
    for n in range(copies):
        target = folder / f"b{n:03d}"
        target.mkdir()
        for i, path in enumerate(sorted((SHARED / "synthea-fhir-r4").glob("*.json"))):
            copy = target / f"bundle{i}.json"
            shutil.copyfile(path, copy)
            bundles.append(copy)
        target = folder / f"n{n:03d}"
        target.mkdir()
        for path in sorted((SHARED / "synthea-bulk-ndjson-10").glob("*.ndjson")):
            shutil.copyfile(path, target / path.name)
            ndjson.append(target / path.name)
    return bundles, ndjson


def _json_only(paths: list[Path]) -> int:
    count = 0
    for path in paths:
        if path.suffix == ".ndjson":
            with path.open("rb") as stream:
                for line in stream:
                    json.loads(line)
                    count += 1
        else:
            count += 1 + len(json.loads(path.read_bytes()).get("entry", []))
    return count


def _reader(paths: list[Path], strict: bool) -> int:
    reader = FhirReader(strict=strict)
    for _ in reader.records(paths):
        pass
    return sum(reader.resources.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        bundles, ndjson = _copy(Path(tmp), args.copies)
        sets = {"bundles": bundles, "ndjson": ndjson, "both": bundles + ndjson}
        for name, every in sets.items():
            for label, run in (
                ("json only", _json_only),
                ("default", lambda p: _reader(p, False)),
                ("strict", lambda p: _reader(p, True)),
            ):
                paths = every
                if label == "strict":  # slow: two copies are enough
                    paths = [p for p in every if p.parent.name[1:] in ("000", "001")]
                best = float("inf")
                count = 0
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    count = run(paths)
                    best = min(best, time.perf_counter() - start)
                print(f"{name:8} {label:10} {count:7d} resources {count / best:9.0f} /s")


if __name__ == "__main__":
    main()
