"""Where ``imagebank deid`` spends its computation, per file: each step of the per-object
pipeline (``services.deid.deidentify_object``) timed in this process, without a profiler.

    python benchmarks/profile_deid.py [--files 500] [--rounds 2]

The corpus is the cached 512x512 CT corpus of the throughput benchmark (generated if missing),
read into memory first, so no I/O is timed: the figures are what the whole command pays on top
of reading and writing the files (see docs/benchmarks.md, section (g)). The last round is
printed (the first warms the caches a long run also has warm: compiled patterns, lookups).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CorpusSpec, corpus_files, ensure_corpus

STEPS = ("parse the header (pixels not parsed)", "engine (profile, pseudonyms, UIDs, dates)",
         "residual-identifier scan", "encode the output header")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from imagebank.dicom.deid import deidentify
    from imagebank.dicom.writer import encode_part10
    from imagebank.services import deid as service

    warnings.simplefilter("ignore")
    spec = CorpusSpec(5000)
    ensure_corpus(spec)
    files = corpus_files(spec)[:args.files]
    datas = [path.read_bytes() for path in files]
    config = service.make_config(bytes(range(32)))
    totals = [0.0] * len(STEPS)
    for _ in range(max(1, args.rounds)):
        totals = [0.0] * len(STEPS)
        for data in datas:
            t0 = time.perf_counter()
            dataset, _tail = service._parse(data, config)
            t1 = time.perf_counter()
            result = deidentify(dataset, config)
            relative = service._output_path(result.patient_pseudonym, result.dataset)
            t2 = time.perf_counter()
            findings = service._scan(dataset, result.dataset, str(relative), config,
                                     result.identifying)
            t3 = time.perf_counter()
            encode_part10(result.dataset)
            t4 = time.perf_counter()
            if findings:
                print("unexpected findings: the corpus is synthetic and clean", file=sys.stderr)
                return 1
            for index, seconds in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                totals[index] += seconds
    width = max(len(step) for step in STEPS)
    for step, seconds in zip(STEPS, totals, strict=True):
        print(f"{step:<{width}}  {seconds / len(datas) * 1000:6.2f} ms")
    print(f"{'compute per file':<{width}}  {sum(totals) / len(datas) * 1000:6.2f} ms "
          f"({len(datas)} files, {spec.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
