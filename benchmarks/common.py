"""What the benchmarks share: the work folder, cached synthetic corpora, cold caches, results.

Everything big lives under ``benchmarks/.work/`` (git-ignored). Generated corpora are kept
there between runs (a JSON marker beside a corpus says it is whole); per-run outputs are made
under ``benchmarks/.work/run/`` and deleted after each measurement.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / ".work"
RUNS = WORK / "run"


def python() -> str:
    """The interpreter running the benchmarks (the project's venv under ``make bench``)."""
    return sys.executable


# -- results --------------------------------------------------------------------------------
@dataclass(slots=True)
class Result:
    """One measured line of the results table."""

    group: str
    name: str
    value: float
    unit: str
    detail: str = ""
    #: (ratio, what it is a ratio against) when there is a baseline.
    ratio: float | None = None
    ratio_of: str = ""
    #: The target, as text, and whether it was met (None: no target).
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def format_table(results: list[Result]) -> str:
    header = ("benchmark", "result", "vs baseline", "target", "met")
    rows = [header]
    for r in results:
        value = f"{r.value:,.1f} {r.unit}" if r.value >= 100 else f"{r.value:,.2f} {r.unit}"
        ratio = f"{r.ratio:.2f}x {r.ratio_of}" if r.ratio is not None else ""
        met = "" if r.met is None else ("yes" if r.met else "NO")
        rows.append((f"{r.group}: {r.name}", value, ratio, r.target, met))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(results: list[Result]) -> str:
    lines = ["| benchmark | result | vs baseline | target | met |", "|---|---:|---:|---|---|"]
    for r in results:
        value = f"{r.value:,.1f} {r.unit}" if r.value >= 100 else f"{r.value:,.2f} {r.unit}"
        ratio = f"{r.ratio:.2f}× {r.ratio_of}" if r.ratio is not None else ""
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.group}: {r.name} | {value} | {ratio} | {r.target} | {met} |")
    return "\n".join(lines)


# -- the machine ----------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024**2, 1)
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usage = shutil.disk_usage(WORK if WORK.exists() else BENCH)
    info["disk_free_gb"] = round(usage.free / 1e9, 1)
    try:
        import pydicom
        import sqlalchemy

        info["pydicom"] = pydicom.__version__
        info["sqlalchemy"] = sqlalchemy.__version__
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    except ImportError:
        pass
    return info


# -- other load on the machine --------------------------------------------------------------
def _cpu_times() -> tuple[float, float]:
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields), idle


def busy_fraction(seconds: float = 1.0) -> float:
    """How busy the CPUs are (0..1) over ``seconds``, while this process sleeps."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(seconds)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1e-9)


def wait_until_quiet(threshold: float = 0.15, max_wait: float = 120.0, log: Any = print
                     ) -> float:
    """Wait (at most ``max_wait`` s) until other processes use under ``threshold`` of the
    CPUs: a benchmark on a shared machine measures the others too. Return the last reading."""
    deadline = time.monotonic() + max_wait
    busy = busy_fraction()
    warned = False
    while busy > threshold and time.monotonic() < deadline:
        if not warned:
            log(f"  (the machine is {busy:.0%} busy with other work: waiting up to "
                f"{max_wait:.0f} s for it to calm down)")
            warned = True
        busy = busy_fraction(2.0)
    if busy > threshold:
        log(f"  (still {busy:.0%} busy: measuring anyway, the figures will be pessimistic)")
    return busy


# -- page cache -----------------------------------------------------------------------------
def drop_caches() -> bool:
    """Flush dirty pages and drop the page cache (root only); False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError:
        return False
    return True


def can_drop_caches() -> bool:
    return os.geteuid() == 0 and os.access("/proc/sys/vm/drop_caches", os.W_OK)


# -- synthetic corpora ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CorpusSpec:
    """A folder of synthetic CT instances: ~100 per patient, 1-2 studies each."""

    instances: int
    rows: int = 512
    columns: int = 512

    @property
    def name(self) -> str:
        return f"ct-{self.instances}-{self.rows}x{self.columns}"

    @property
    def path(self) -> Path:
        return WORK / "corpus" / self.name

    @property
    def marker(self) -> Path:
        """Beside the folder, so that the folder holds DICOM files only."""
        return WORK / "corpus" / f"{self.name}.json"

    def studies(self) -> list[tuple[int, int, int]]:
        """(patient number, study number, slices) of every study, slices summing to N."""
        patients = max(1, self.instances // 100)
        layout = [(p, s) for p in range(patients) for s in range(2 if p % 2 == 0 else 1)]
        base, extra = divmod(self.instances, len(layout))
        return [(p, s, base + (1 if i < extra else 0)) for i, (p, s) in enumerate(layout)]


def ensure_corpus(spec: CorpusSpec, log: Any = print) -> Path:
    """The corpus folder, generated once and kept (``spec.marker`` marks a whole one)."""
    if spec.marker.exists() and spec.path.is_dir():
        return spec.path
    from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

    log(f"generating corpus {spec.name} ({spec.instances:,} instances) in {spec.path} ...")
    started = time.monotonic()
    partial = spec.path.with_name(spec.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    total = 0
    count = 0
    for patient_no, study_no, slices in spec.studies():
        patient = SyntheticPatient.make(patient_no)
        series = [SeriesSpec(slices=slices, rows=spec.rows, columns=spec.columns)]
        folder = partial / patient.patient_id / f"study{study_no + 1}" / "series1"
        folder.mkdir(parents=True, exist_ok=True)
        for k, ds in enumerate(make_study(patient, study_number=study_no, series=series)):
            data = to_bytes(ds)
            (folder / f"IM{k + 1:05d}.dcm").write_bytes(data)
            total += len(data)
            count += 1
    shutil.rmtree(spec.path, ignore_errors=True)
    partial.rename(spec.path)
    spec.marker.write_text(json.dumps({"instances": count, "bytes": total}))
    log(f"  done in {time.monotonic() - started:.0f} s ({total / 1e9:.2f} GB)")
    return spec.path


def corpus_stats(spec: CorpusSpec) -> dict[str, int]:
    stats: dict[str, int] = json.loads(spec.marker.read_text())
    return stats


def corpus_files(spec: CorpusSpec) -> list[Path]:
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(spec.path):
        dirnames.sort()
        files.extend(Path(dirpath) / f for f in sorted(filenames))
    return files


def fresh_run_dir(name: str) -> Path:
    path = RUNS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def ensure_built(folder: Path, build: Callable[[Path], dict[str, int]], what: str,
                 log: Any = print) -> Path:
    """``folder``, built once by ``build`` and kept; ``folder.json`` (its counts) marks a
    whole one, so an interrupted build is started again."""
    marker = folder.with_suffix(".json")
    if marker.exists() and folder.is_dir():
        return folder
    remove(folder)
    log(f"building {what} in {folder} ...")
    started = time.monotonic()
    counts = build(folder)
    marker.write_text(json.dumps(counts))
    log(f"  done in {time.monotonic() - started:.1f} s: {counts}")
    return folder


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a server this benchmark started, by its PID: SIGTERM, then SIGKILL after 30 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def run_python_json(code: str, *args: str, timeout: float = 7200) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run([python(), "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
