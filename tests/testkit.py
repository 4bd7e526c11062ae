"""Helpers shared by tests in every folder: import them with ``from testkit import ...``
(never ``from conftest import``: each test folder may have its own conftest module)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("IMAGEBANK_SHARED_DATA", REPO.parent / "shared" / "data"))


def new_pg_database(server_url: str) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def write_study(folder: Path, patient: int = 0, *, study_number: int = 0, slices: int = 4,
                rows: int = 64, columns: int = 64, modality: str = "CT",
                issuer: str = "SYNTH-TRUST") -> list[Path]:
    """Write one synthetic study's files into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    spec = SeriesSpec(modality=modality, slices=slices, rows=rows, columns=columns)
    studies = make_study(SyntheticPatient.make(patient, issuer), study_number=study_number,
                         series=[spec])
    for i, ds in enumerate(studies):
        path = folder / f"p{patient}-s{study_number}-{i:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        paths.append(path)
    return paths


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False
