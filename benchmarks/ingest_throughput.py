"""(a) Folder ingest throughput: imagebank vs ``cp -r && sync`` vs Orthanc's REST API.

Each contestant reads the same cached corpus and writes to a fresh folder on the same file
system; each run starts with the page cache dropped (``--cold``, root only) or not (warm), the
same for all three. Timed:

* imagebank: ``Archive.ingest([corpus], project)`` in a fresh process (opening the archive and
  creating the project are not timed); durable: objects synced (``syncfs``) before each batch's
  index commit, SQLite in WAL with ``synchronous=FULL``;
* cp: ``cp -r corpus dest && sync`` (the physical limit of reading and writing the bytes);
* Orthanc: from the first ``POST /instances`` to the last answer, two client threads with
  keep-alive sessions, the server already up (its start-up not timed).

Run alone: ``python benchmarks/ingest_throughput.py [--smoke]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CorpusSpec,
    Result,
    corpus_files,
    corpus_stats,
    drop_caches,
    ensure_corpus,
    format_table,
    fresh_run_dir,
    python,
    remove,
    stop_process,
    wait_until_quiet,
)

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
PROJECT = "bench"


# -- imagebank --------------------------------------------------------------------------------
def _child_imagebank(data: str, corpus: str, workers: int, cold: bool) -> None:
    """In a fresh process: open an archive, create the project, time the ingest."""
    from common import drop_caches

    from imagebank.services.archive import Archive

    archive = Archive.open(data, workers=workers)
    try:
        archive.create_project(PROJECT)
        if cold:
            drop_caches()
        before = (resource.getrusage(resource.RUSAGE_SELF),
                  resource.getrusage(resource.RUSAGE_CHILDREN))
        started = time.perf_counter()
        summary = archive.ingest([corpus], PROJECT)
        elapsed = time.perf_counter() - started
        after = (resource.getrusage(resource.RUSAGE_SELF),
                 resource.getrusage(resource.RUSAGE_CHILDREN))
    finally:
        archive.close()
    cpu = {f"{who}_{kind}": getattr(after[i], f"ru_{kind}time") - getattr(before[i],
                                                                        f"ru_{kind}time")
           for i, who in enumerate(("main", "workers")) for kind in ("u", "s")}
    print(json.dumps({"seconds": elapsed, "stored": summary.stored, "total": summary.total,
                      "quarantined": summary.quarantined, "reasons": summary.reasons,
                      "cpu": cpu}))


def run_imagebank(spec: CorpusSpec, *, workers: int = 2, cold: bool, src: str | None = None
                  ) -> dict[str, Any]:
    """Ingest ``spec`` in a fresh process; ``src``: another imagebank source tree to run
    instead of the installed one (``--compare-src``, for before/after measurements)."""
    run = fresh_run_dir("imagebank-ingest")
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        proc = subprocess.run(
            [python(), str(Path(__file__).resolve()), "--child-imagebank", str(run / "data"),
             str(spec.path), str(workers), "1" if cold else "0"],
            capture_output=True, text=True, check=False, timeout=7200, env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"imagebank ingest failed:\n{proc.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        remove(run)
    expected = corpus_stats(spec)["instances"]
    if result["stored"] != expected:
        raise RuntimeError(f"imagebank stored {result['stored']} of {expected} instances: "
                           f"{result['reasons']}")
    return result


# -- cp -r && sync ----------------------------------------------------------------------------
def run_cp(spec: CorpusSpec, *, cold: bool) -> dict[str, Any]:
    run = fresh_run_dir("cp")
    try:
        if cold:
            drop_caches()
        started = time.perf_counter()
        subprocess.run(["sh", "-c", 'cp -r "$0" "$1" && sync', str(spec.path),
                        str(run / "dest")], check=True)
        elapsed = time.perf_counter() - started
        copied = sum(len(files) for _, _, files in os.walk(run / "dest"))
    finally:
        remove(run)
    expected = corpus_stats(spec)["instances"]
    if copied != expected:
        raise RuntimeError(f"cp copied {copied} of {expected} files")
    return {"seconds": elapsed}


# -- Orthanc ----------------------------------------------------------------------------------
def orthanc_available() -> bool:
    return os.access(ORTHANC, os.X_OK)


def orthanc_version() -> str:
    if not orthanc_available():
        return ""
    proc = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()[0].split()[-1] if proc.stdout else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """Orthanc on 127.0.0.1 with a temporary configuration, storage and index.

    Stopped by the PID this object started (SIGTERM, then SIGKILL after 30 s).
    """

    def __init__(self, root: Path, *, dicom: bool = False, dicomweb: bool = False) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        #: The DICOM listener (AE title ORTHANC, any calling AE) when ``dicom``.
        self.dicom = dicom
        self.dicom_port = _free_port()
        #: The DICOMweb plugin (Debian's orthanc-dicomweb) at ``/dicom-web`` when ``dicomweb``.
        self.dicomweb = dicomweb

    def __enter__(self) -> OrthancServer:
        import requests

        config = {
            "Name": "imagebank-bench",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.port,
            "DicomServerEnabled": self.dicom,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
            "LoadPrivateDictionary": False,
            "SaveJobs": False,
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        env = {**os.environ, "TCP_NODELAY": "1"}
        log = open(self.root / "orthanc.log", "wb")
        self._log = log
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.root)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited at start-up ({self.proc.returncode}): "
                                   f"{(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Orthanc did not answer /system within 60 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self._log.close()
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def statistics(self) -> dict[str, Any]:
        import requests

        response = requests.get(f"{self.url}/statistics", timeout=30)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


def post_instances(url: str, files: list[Path], threads: int = 2) -> tuple[float, int]:
    """POST every file to ``url/instances`` from ``threads`` keep-alive sessions; return
    (seconds, failures)."""
    import requests

    lock = threading.Lock()
    position = 0
    failures: list[str] = []

    def client() -> None:
        nonlocal position
        with requests.Session() as session:
            headers = {"Content-Type": "application/dicom", "Expect": ""}
            while True:
                with lock:
                    if position >= len(files):
                        return
                    path = files[position]
                    position += 1
                data = path.read_bytes()
                try:
                    response = session.post(f"{url}/instances", data=data, headers=headers,
                                            timeout=120)
                    status = response.json().get("Status") if response.ok else None
                except (requests.RequestException, ValueError) as exc:
                    status = type(exc).__name__
                if status not in ("Success", "AlreadyStored"):
                    with lock:
                        failures.append(f"{path.name}: {status}")

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started, len(failures)


def run_orthanc(spec: CorpusSpec, *, cold: bool, threads: int = 2) -> dict[str, Any]:
    run = fresh_run_dir("orthanc")
    files = corpus_files(spec)
    try:
        with OrthancServer(run) as server:
            if cold:
                drop_caches()
            seconds, failures = post_instances(server.url, files, threads)
            count = int(server.statistics()["CountInstances"])
    finally:
        remove(run)
    if failures or count != len(files):
        raise RuntimeError(f"Orthanc stored {count} of {len(files)} ({failures} failures)")
    return {"seconds": seconds}


# -- all three ---------------------------------------------------------------------------------
def measure(spec: CorpusSpec, *, cold: bool, workers: int = 2, repeat: int = 1,
            with_orthanc: bool = True, quiet_wait: float = 120, log: Any = print,
            compare_src: str | None = None) -> list[Result]:
    """Run the contestants in ``repeat`` rounds; each run waits (at most ``quiet_wait`` s)
    for the machine to be quiet first."""
    ensure_corpus(spec, log)
    stats = corpus_stats(spec)
    n, size = stats["instances"], stats["bytes"]
    contestants: list[tuple[str, Any]] = [
        ("cp -r && sync", lambda: run_cp(spec, cold=cold)),
        (f"imagebank ingest (workers={workers})",
         lambda: run_imagebank(spec, workers=workers, cold=cold)),
    ]
    if compare_src is not None:
        contestants.append((f"imagebank ingest (workers={workers}) from {compare_src}",
                            lambda: run_imagebank(spec, workers=workers, cold=cold,
                                                  src=compare_src)))
    if with_orthanc and orthanc_available():
        contestants.append((f"Orthanc {orthanc_version()} REST, 2 client threads",
                            lambda: run_orthanc(spec, cold=cold)))
    elif with_orthanc:
        log(f"Orthanc not found at {ORTHANC}: skipped")
    # Rounds of one run of each contestant, so that a drift of the machine (the disk of a VM
    # is not steady) touches them alike; the median of the rounds is reported.
    times: dict[str, list[float]] = {name: [] for name, _ in contestants}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name, _ in contestants}
    busy: list[float] = []
    for i in range(repeat):
        for name, run in contestants:
            busy.append(wait_until_quiet(max_wait=quiet_wait, log=log) if quiet_wait
                        else 0.0)
            outcome = run()
            times[name].append(outcome["seconds"])
            note = ""
            if "cpu" in outcome:
                cpu[name].append(outcome["cpu"])
                c = outcome["cpu"]
                note = (f"; CPU main {c['main_u'] + c['main_s']:.1f} s "
                        f"(sys {c['main_s']:.1f}), workers {c['workers_u'] + c['workers_s']:.1f}"
                        f" s (sys {c['workers_s']:.1f})")
            log(f"  round {i + 1}: {name}: {times[name][-1]:.2f} s "
                f"({n / times[name][-1]:,.0f} instances/s){note}")
    seconds = {name: statistics.median(values) for name, values in times.items()}
    volume = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    group = f"ingest {n:,} x {spec.rows}x{spec.columns} ({volume}, " \
            f"{'cold' if cold else 'warm'} cache)"
    results = []
    for name, _ in contestants:
        rate = n / seconds[name]
        mb_s = size / seconds[name] / 1e6
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        results.append(Result(group, name, rate, "inst/s",
                              detail=f"median {seconds[name]:.2f} s of [{runs}] s; "
                                     f"{mb_s:,.0f} MB/s",
                              extra={"seconds": seconds[name], "runs": times[name],
                                     "mb_s": mb_s}))
    for result in results:
        figures = cpu[result.name]
        if figures:
            per_file = {k: statistics.median(c[k] for c in figures) / n * 1000
                        for k in figures[0]}
            result.extra["cpu_ms_per_instance"] = per_file
            result.detail += (
                f"; CPU per instance: main {per_file['main_u'] + per_file['main_s']:.2f} ms, "
                f"workers {per_file['workers_u'] + per_file['workers_s']:.2f} ms "
                f"(of which system {per_file['main_s'] + per_file['workers_s']:.2f} ms)")
    ib = results[1]
    ib.extra["machine_busy_before_runs"] = busy
    ib.ratio = ib.value / results[0].value
    ib.ratio_of = "cp"
    ib.target = ">= 0.6x cp"
    ib.met = ib.ratio >= 0.6
    for other in results[2:]:
        other.ratio = other.value / results[0].value
        other.ratio_of = "cp"
    if with_orthanc and orthanc_available():
        orthanc = results[-1]
        orthanc.ratio = orthanc.value / results[0].value
        orthanc.ratio_of = "cp"
        ib.extra["vs_orthanc"] = ib.value / orthanc.value
        results.append(Result(group, "imagebank / Orthanc", ib.value / orthanc.value, "x",
                              target=">= 2x Orthanc", met=ib.value / orthanc.value >= 2.0))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child-imagebank", nargs=4, metavar=("DATA", "CORPUS", "WORKERS",
                                                                "COLD"))
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--compare-src", metavar="DIR",
                        help="also ingest with the imagebank package found in DIR (a copy of "
                             "src/ at another version), in the same rounds")
    args = parser.parse_args()
    if args.child_imagebank:
        data, corpus, workers, cold = args.child_imagebank
        _child_imagebank(data, corpus, int(workers), cold == "1")
        return
    spec = CorpusSpec(200, 64, 64) if args.smoke else CorpusSpec(5000)
    results = measure(spec, cold=not args.warm, workers=args.workers, repeat=args.repeat,
                      with_orthanc=not args.no_orthanc, compare_src=args.compare_src)
    print(format_table(results))


if __name__ == "__main__":
    main()
