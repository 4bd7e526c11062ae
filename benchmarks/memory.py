"""(b) Peak memory of an ingest is flat in corpus size: N and 10×N small instances.

The ingest runs in a fresh process (the same child as the throughput benchmark); this process
polls ``/proc`` every 20 ms for that process and its descendants (the parse workers) and
records:

* the peak of the summed resident set (VmRSS of the main process + workers at one instant);
* the sum of each process's own peak (VmHWM, read by the kernel, so no spike is missed);
  this is the figure compared with the target, being the larger and the safer;
* the peak of the summed proportional set size (PSS, every 250 ms): RSS counts the pages the
  forked workers share with their parent once per process, PSS once in all, so PSS is what
  the machine really gives the ingest.

Run alone: ``python benchmarks/memory.py [--smoke]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CorpusSpec,
    Result,
    corpus_stats,
    ensure_corpus,
    format_table,
    fresh_run_dir,
    python,
    remove,
)

TARGET_MB = 300.0


def _status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and PPid of a process, or {} if it is gone."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "PPid"):
                    found[key] = int(value.split()[0])
    except (OSError, ValueError):
        return {}
    return found


def _pss_kb(pid: int) -> int:
    """Proportional set size: pages shared by n processes count 1/n in each."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _status(int(entry)).get("PPid")
            if ppid:
                parents.setdefault(ppid, []).append(int(entry))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(parents.get(pid, []))
    return found


def run_measured(spec: CorpusSpec, *, workers: int = 2, interval: float = 0.02
                 ) -> dict[str, Any]:
    """Ingest ``spec`` in a child process; return its peak memory figures (MB)."""
    run = fresh_run_dir("memory")
    script = Path(__file__).resolve().parent / "ingest_throughput.py"
    try:
        proc = subprocess.Popen(
            [python(), str(script), "--child-imagebank", str(run / "data"), str(spec.path),
             str(workers), "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        hwm: dict[int, int] = {}
        peak_sum = 0
        peak_pss = 0
        processes = 0
        last_scan = last_pss = 0.0
        pids = [proc.pid]
        while proc.poll() is None:
            now = time.monotonic()
            if now - last_scan > 0.1:  # workers appear once the first files are listed
                pids = _descendants(proc.pid)
                last_scan = now
            if now - last_pss > 0.25:  # smaps_rollup is dearer to read: four times a second
                peak_pss = max(peak_pss, sum(_pss_kb(pid) for pid in pids))
                last_pss = now
            total = 0
            for pid in pids:
                status = _status(pid)
                if status:
                    total += status.get("VmRSS", 0)
                    hwm[pid] = max(hwm.get(pid, 0), status.get("VmHWM", 0))
            processes = max(processes, len(hwm))
            peak_sum = max(peak_sum, total)
            time.sleep(interval)
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ingest for the memory benchmark failed:\n{stderr[-4000:]}")
        result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    finally:
        remove(run)
    expected = corpus_stats(spec)["instances"]
    if result["stored"] != expected:
        raise RuntimeError(f"stored {result['stored']} of {expected}: {result['reasons']}")
    result.update(peak_rss_sum_mb=peak_sum / 1024, sum_of_peaks_mb=sum(hwm.values()) / 1024,
                  main_peak_mb=hwm.get(proc.pid, 0) / 1024, processes=processes,
                  peak_pss_sum_mb=peak_pss / 1024)
    return result


def measure(small: CorpusSpec, large: CorpusSpec, *, workers: int = 2,
            log: Any = print) -> list[Result]:
    results = []
    figures = []
    for spec in (small, large):
        ensure_corpus(spec, log)
        figure = run_measured(spec, workers=workers)
        figures.append(figure)
        n = corpus_stats(spec)["instances"]
        log(f"  memory, {n:,} instances: sum of peaks {figure['sum_of_peaks_mb']:.0f} MB, "
            f"peak of sum {figure['peak_rss_sum_mb']:.0f} MB, "
            f"PSS {figure['peak_pss_sum_mb']:.0f} MB, main {figure['main_peak_mb']:.0f}"
            f" MB, {figure['processes']} processes, {figure['seconds']:.1f} s")
        results.append(Result(
            f"peak memory, ingest of {spec.rows}x{spec.columns} instances (workers={workers})",
            f"{n:,} instances: main + workers", figure["sum_of_peaks_mb"], "MB",
            detail=f"peak of instant sum {figure['peak_rss_sum_mb']:.0f} MB; main process "
                   f"{figure['main_peak_mb']:.0f} MB; proportional (PSS, shared pages "
                   f"counted once) {figure['peak_pss_sum_mb']:.0f} MB",
            target=f"< {TARGET_MB:.0f} MB" if spec is large else "",
            met=figure["sum_of_peaks_mb"] < TARGET_MB if spec is large else None,
            extra=figure,
        ))
    growth = figures[1]["sum_of_peaks_mb"] / figures[0]["sum_of_peaks_mb"]
    results[1].ratio = growth
    results[1].ratio_of = f"the {corpus_stats(small)['instances']:,} run"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.smoke:
        small, large = CorpusSpec(200, 64, 64), CorpusSpec(2000, 64, 64)
    else:
        small, large = CorpusSpec(5000, 64, 64), CorpusSpec(50000, 64, 64)
    print(format_table(measure(small, large, workers=args.workers)))


if __name__ == "__main__":
    main()
