"""What we write validates: synthetic studies pass dicom3tools' dciodvfy without errors."""

import shutil
import subprocess
from pathlib import Path

import pytest

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

DCIODVFY = shutil.which("dciodvfy")


def _validate(path: Path) -> list[str]:
    assert DCIODVFY, "dciodvfy is missing: apt-get install dicom3tools (.ci/run does)"
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert "CTImage" in output or "MRImage" in output, output[:500]
    return [line for line in output.splitlines() if line.startswith("Error")]


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_synthetic_instances_pass_dciodvfy(tmp_path: Path, modality: str) -> None:
    spec = SeriesSpec(modality=modality, slices=2, rows=32, columns=32)
    for i, ds in enumerate(make_study(SyntheticPatient.make(7), series=[spec])):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(to_bytes(ds))
        assert _validate(path) == []


def test_dciodvfy_does_find_errors(tmp_path: Path) -> None:
    """The check can fail: an instance missing a Type 1 attribute is reported."""
    ds = next(make_study(SyntheticPatient.make(8), series=[SeriesSpec(slices=1, rows=32,
                                                                       columns=32)]))
    del ds.Modality
    path = tmp_path / "bad.dcm"
    path.write_bytes(to_bytes(ds))
    assert _validate(path)
