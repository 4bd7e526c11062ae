"""(d) REST upload: the real server against Orthanc 1.10, one file per request.

The same cached corpus (5,000 CT instances of 512x512, as in (a)), the same client code (two
threads, each with its own keep-alive ``requests.Session``, reading each file and POSTing it),
on the same machine, the page cache dropped before each timed run (root, full mode):

* imagebank: a fresh data folder; ``imagebank user add admin --admin --password-stdin`` and
  ``imagebank token create admin --scope read --scope write --scope admin`` (the CLI), then
  ``imagebank --data DIR serve --port P`` as a subprocess, ``POST /api/v1/projects``; timed:
  ``POST /api/v1/projects/bench/instances`` (``Content-Type: application/dicom``, bearer
  token) of every file, from the first request to the last answer. Afterwards
  ``GET /api/v1/projects/bench`` must count 5,000 instances.
* Orthanc: ``POST /instances`` of every file to a fresh Orthanc (as in (a)); afterwards
  ``GET /statistics`` must count 5,000 instances.

Servers' start-up is not timed. Each server's CPU time during the run is read from
``/proc/PID/stat`` and reported per instance, with the client's.

Run alone: ``python benchmarks/rest_upload.py [--smoke] [--repeat N] [--warm]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    CorpusSpec,
    Result,
    can_drop_caches,
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
from ingest_throughput import OrthancServer, _free_port, orthanc_available, orthanc_version

PROJECT = "bench"
ADMIN = "admin"
API = "/api/v1"


# -- the imagebank server ---------------------------------------------------------------------
def imagebank_command() -> list[str]:
    """The ``imagebank`` console script beside the running interpreter (the venv's), else
    ``python -m imagebank``."""
    script = Path(python()).parent / "imagebank"
    return [str(script)] if os.access(script, os.X_OK) else [python(), "-m", "imagebank"]


def _clean_env() -> dict[str, str]:
    """The environment without IMAGEBANK_* settings (a developer's database URL or data
    folder must not leak into the benchmark), with the default settings otherwise."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class ImagebankServer:
    """``imagebank --data DIR serve`` on 127.0.0.1, with an administrator and a full-scope
    token made by the CLI (``headers`` carries it) and, if ``project``, that project made
    through the API. Stopped by the PID this object started (SIGTERM, then SIGKILL)."""

    def __init__(self, data: Path, *, project: str | None = PROJECT,
                 log: Path | None = None, serve_command: list[str] | None = None,
                 env: dict[str, str] | None = None, serve_args: list[str] | None = None
                 ) -> None:
        self.data = data
        #: Extra options of ``serve`` (e.g. ``--dicom-port``).
        self.serve_args = list(serve_args or [])
        self.project = project
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or data.parent / "imagebank-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.env = {**_clean_env(), **(env or {})}
        #: What runs ``serve`` (default: the CLI; ``--phases`` wraps it in timers).
        self.serve_command = serve_command or imagebank_command()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def cli(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run([*imagebank_command(), "--data", str(self.data), *args],
                              input=stdin, capture_output=True, text=True, env=self.env,
                              cwd=REPO, timeout=120, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"imagebank {args[0]} {args[1]} failed ({proc.returncode}): "
                               f"{proc.stderr[-2000:]}")
        return proc.stdout

    def __enter__(self) -> ImagebankServer:
        import requests

        password = "bench-" + secrets.token_urlsafe(18)
        self.cli("user", "add", ADMIN, "--admin", "--password-stdin", stdin=password + "\n")
        out = self.cli("token", "create", ADMIN, "--scope", "read", "--scope", "write",
                       "--scope", "admin", "--name", "benchmark")
        self.token = out.strip().splitlines()[-1].strip()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*self.serve_command, "--data", str(self.data), "serve", "--host", "127.0.0.1",
             "--port", str(self.port), *self.serve_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"imagebank serve exited at start-up "
                                       f"({self.proc.returncode}): {self.log_tail()}")
                try:
                    if requests.get(f"{self.url}{API}/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"imagebank serve did not answer within 60 s: "
                                       f"{self.log_tail()}")
                time.sleep(0.1)
            if self.project:
                response = requests.post(f"{self.url}{API}/projects", json={"id": self.project},
                                         headers=self.headers, timeout=30)
                if response.status_code != 201:
                    raise RuntimeError(f"creating project {self.project!r}: "
                                       f"{response.status_code} {response.text[:500]}")
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self._log.close()
        self.proc = None

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def counts(self, project: str = PROJECT) -> dict[str, int]:
        import requests

        response = requests.get(f"{self.url}{API}/projects/{project}", headers=self.headers,
                                timeout=60)
        response.raise_for_status()
        counts: dict[str, int] = response.json()["counts"]
        return counts


# -- the client: the same for both servers ----------------------------------------------------
def post_files(url: str, files: list[Path], *, headers: dict[str, str],
               accepted: Callable[[Any], bool], threads: int = 2) -> dict[str, Any]:
    """POST every file to ``url`` from ``threads`` threads, each with a keep-alive session,
    taking the next file from a shared list; a file is read by the thread that sends it.
    Return the wall time from the first request to the last answer, the failures, and the
    per-request latencies (ms)."""
    import requests

    lock = threading.Lock()
    position = 0
    failures: list[str] = []
    latencies: list[float] = []
    send_headers = {"Content-Type": "application/dicom", **headers}

    def client() -> None:
        nonlocal position
        mine: list[float] = []
        with requests.Session() as session:
            while True:
                with lock:
                    if position >= len(files):
                        break
                    path = files[position]
                    position += 1
                data = path.read_bytes()
                t0 = time.perf_counter()
                try:
                    response = session.post(url, data=data, headers=send_headers, timeout=120)
                    ok = accepted(response)
                    why = "" if ok else f"{response.status_code} {response.text[:200]}"
                except (requests.RequestException, ValueError) as exc:
                    ok, why = False, type(exc).__name__
                mine.append((time.perf_counter() - t0) * 1000)
                if not ok:
                    with lock:
                        failures.append(f"{path.name}: {why}")
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"seconds": time.perf_counter() - started, "failures": failures,
            "latencies": latencies}


def _orthanc_ok(response: Any) -> bool:
    return bool(response.ok and response.json().get("Status") in ("Success", "AlreadyStored"))


def _imagebank_ok(response: Any) -> bool:
    return bool(response.status_code == 200 and response.json().get("stored") == 1)


def _timed(pid: int, url: str, files: list[Path], headers: dict[str, str],
           accepted: Callable[[Any], bool], cold: bool, threads: int) -> dict[str, Any]:
    """Drop the cache (if ``cold``), then upload, measuring the server's and the client's CPU."""
    if cold:
        drop_caches()
    server0 = process_cpu(pid)
    client0 = resource.getrusage(resource.RUSAGE_SELF)
    outcome = post_files(url, files, headers=headers, accepted=accepted, threads=threads)
    client1 = resource.getrusage(resource.RUSAGE_SELF)
    outcome["server_cpu"] = process_cpu(pid) - server0
    outcome["client_cpu"] = (client1.ru_utime - client0.ru_utime
                             + client1.ru_stime - client0.ru_stime)
    return outcome


def run_imagebank(files: list[Path], *, cold: bool, threads: int = 2) -> dict[str, Any]:
    run = fresh_run_dir("imagebank-rest")
    try:
        with ImagebankServer(run / "data", log=run / "serve.log") as server:
            outcome = _timed(server.pid, f"{server.url}{API}/projects/{PROJECT}/instances",
                             files, server.headers, _imagebank_ok, cold, threads)
            counts = server.counts()
            if outcome["failures"] or counts["instances"] != len(files):
                raise RuntimeError(
                    f"imagebank stored {counts['instances']} of {len(files)} instances "
                    f"({len(outcome['failures'])} failures, e.g. {outcome['failures'][:3]}); "
                    f"server log: {server.log_tail()}")
    finally:
        remove(run)
    return outcome


def run_orthanc(files: list[Path], *, cold: bool, threads: int = 2) -> dict[str, Any]:
    run = fresh_run_dir("orthanc-rest")
    try:
        with OrthancServer(run) as server:
            assert server.proc is not None
            outcome = _timed(server.proc.pid, f"{server.url}/instances", files, {},
                             _orthanc_ok, cold, threads)
            count = int(server.statistics()["CountInstances"])
    finally:
        remove(run)
    if outcome["failures"] or count != len(files):
        raise RuntimeError(f"Orthanc stored {count} of {len(files)} instances "
                           f"({len(outcome['failures'])} failures, e.g. "
                           f"{outcome['failures'][:3]})")
    return outcome


# -- both ---------------------------------------------------------------------------------------
def measure(spec: CorpusSpec, *, cold: bool, repeat: int = 1, threads: int = 2,
            with_orthanc: bool = True, quiet_wait: float = 120, log: Any = print
            ) -> list[Result]:
    """``repeat`` rounds of one run of each server; the median of the rounds is reported."""
    ensure_corpus(spec, log)
    files = corpus_files(spec)
    size = corpus_stats(spec)["bytes"]
    n = len(files)
    contestants: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (f"imagebank REST upload, {threads} client threads",
         lambda: run_imagebank(files, cold=cold, threads=threads)),
    ]
    if with_orthanc and orthanc_available():
        contestants.append((f"Orthanc {orthanc_version()} REST POST /instances, {threads} "
                            "client threads",
                            lambda: run_orthanc(files, cold=cold, threads=threads)))
    elif with_orthanc:
        log("Orthanc not found: skipped")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in contestants}
    for i in range(repeat):
        for name, run in contestants:
            if quiet_wait:
                wait_until_quiet(max_wait=quiet_wait, log=log)
            outcome = run()
            runs[name].append(outcome)
            lat = sorted(outcome["latencies"])
            log(f"  round {i + 1}: {name}: {outcome['seconds']:.2f} s "
                f"({n / outcome['seconds']:,.0f} instances/s); per request median "
                f"{statistics.median(lat):.1f} ms, p95 {lat[int(len(lat) * 0.95) - 1]:.1f} ms;"
                f" CPU per instance: server {outcome['server_cpu'] / n * 1000:.2f} ms, "
                f"client {outcome['client_cpu'] / n * 1000:.2f} ms")
    volume = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    group = (f"REST upload {n:,} x {spec.rows}x{spec.columns} ({volume}, "
             f"{'cold' if cold else 'warm'} cache)")
    results = []
    for name, _ in contestants:
        outcomes = runs[name]
        seconds = statistics.median(o["seconds"] for o in outcomes)
        latencies = sorted(x for o in outcomes for x in o["latencies"])
        p50 = statistics.median(latencies)
        p95 = latencies[int(len(latencies) * 0.95) - 1]
        server_ms = statistics.median(o["server_cpu"] for o in outcomes) / n * 1000
        client_ms = statistics.median(o["client_cpu"] for o in outcomes) / n * 1000
        times = ", ".join(f"{o['seconds']:.2f}" for o in outcomes)
        results.append(Result(
            group, name, n / seconds, "inst/s",
            detail=(f"median {seconds:.2f} s of [{times}] s; {size / seconds / 1e6:,.0f} MB/s;"
                    f" request latency median {p50:.1f} ms, p95 {p95:.1f} ms; CPU per "
                    f"instance: server {server_ms:.2f} ms, client {client_ms:.2f} ms"),
            extra={"seconds": seconds, "runs": [o["seconds"] for o in outcomes],
                   "latency_ms_p50": p50, "latency_ms_p95": p95,
                   "server_cpu_ms_per_instance": server_ms,
                   "client_cpu_ms_per_instance": client_ms}))
    if len(results) == 2:
        imagebank, orthanc = results
        ratio = imagebank.value / orthanc.value
        imagebank.ratio, imagebank.ratio_of = ratio, "Orthanc"
        results.append(Result(group, "imagebank / Orthanc (REST upload)", ratio, "x",
                              target=">= 2x Orthanc", met=ratio >= 2.0))
    return results


def smoke_spec() -> CorpusSpec:
    return CorpusSpec(100, 64, 64)


def full_spec() -> CorpusSpec:
    return CorpusSpec(5000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--warm", action="store_true", help="do not drop the page cache")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()
    cold = not args.warm and not args.smoke and can_drop_caches()
    spec = smoke_spec() if args.smoke else full_spec()
    results = measure(spec, cold=cold, repeat=args.repeat, threads=args.threads,
                      with_orthanc=not args.no_orthanc, quiet_wait=0 if args.smoke else 120)
    print(format_table(results))


if __name__ == "__main__":
    main()
