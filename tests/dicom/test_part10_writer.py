"""The engine's output encoder (``dicom.writer.encode_part10``) gives exactly the bytes
``pydicom.dcmwrite`` gives, for outputs holding elements passed through undecoded and new
ones, in every transfer syntax family (implicit, explicit, encapsulated; deflated and big
endian go to pydicom)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement

from deidkit import phi_datasets
from imagebank.dicom.deid import deidentify
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.dicom.writer import encode_part10
from imagebank.services.deid import make_config

TEST_FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm",
              "JPEG2000.dcm", "emri_small_big_endian.dcm", "image_dfl.dcm", "reportsi.dcm",
              "SC_rgb_rle.dcm", "MR_small_bigendian.dcm", "ExplVR_BigEnd.dcm"]
OPTIONS = [(), ("retain_long_modified_dates", "clean_descriptors"),
           ("retain_uids", "retain_device_identity", "retain_long_full_dates")]


def _inputs() -> list[tuple[str, bytes]]:
    items = [(name, Path(str(get_testdata_file(name))).read_bytes()) for name in TEST_FILES]
    items += [(f"phi-{i}", to_bytes(ds)) for i in range(2) for ds in phi_datasets(i, 2)]
    spec = SeriesSpec(slices=2, rows=16, columns=16)
    items += [(f"ct-{i}", to_bytes(ds)) for i, ds in
              enumerate(make_study(SyntheticPatient.make(7), series=[spec]))]
    return items


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "basic")
def test_the_encoder_gives_pydicoms_bytes(options: tuple[str, ...]) -> None:
    config = make_config(bytes(range(32)), options)
    passed_through = 0
    for name, data in _inputs():
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.BurnedInAnnotation = "NO"  # pixels are not this test's concern
        out = deidentify(ds, config).dataset
        passed_through += sum(isinstance(out.get_item(k), RawDataElement) for k in out.keys())
        expected = io.BytesIO()
        pydicom.dcmwrite(expected, out, enforce_file_format=True)
        assert encode_part10(out) == expected.getvalue(), name
    assert passed_through > 100  # the fast path was taken, not only pydicom's
