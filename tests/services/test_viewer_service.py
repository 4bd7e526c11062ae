"""What the series viewer is given of a series (services.viewer, decision 0029): images in
order from the index alone, a multi-frame instance per frame by its functional groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.domain.errors import NotFoundError
from imagebank.services.archive import Archive
from imagebank.services.viewer import series_view

#: The frames' z positions, in frame order: not the order along the normal.
FRAME_Z = (30.0, 10.0, 40.0, 20.0)


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _enhanced() -> Dataset:
    """An enhanced CT instance of four frames placed by its Per-frame Functional Groups, its
    orientation, rescale and window in the Shared group (none at the top level)."""
    spec = SeriesSpec(slices=1, rows=16, columns=16, description="ENHANCED")
    (ds,) = make_study(SyntheticPatient.make(60), series=[spec])
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "RescaleIntercept",
                    "RescaleSlope", "WindowCenter", "WindowWidth", "SliceLocation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.NumberOfFrames = len(FRAME_Z)
    ds.PixelData = np.arange(16 * 16 * len(FRAME_Z), dtype=np.uint16).tobytes()
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelValueTransformationSequence=Sequence([_item(
            RescaleIntercept=-100, RescaleSlope=2, RescaleType="HU")]),
        FrameVOILUTSequence=Sequence([_item(WindowCenter=50, WindowWidth=350)]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([_item(
        PlanePositionSequence=Sequence([_item(ImagePositionPatient=[0, 0, z])]))
        for z in FRAME_Z])
    return ds


def test_a_multiframe_instance_is_placed_frame_by_frame(tmp_path: Path) -> None:
    archive = Archive.open(tmp_path / "data", workers=1)
    try:
        archive.create_project("p")
        ds = _enhanced()
        assert archive.ingest_bytes([(to_bytes(ds), "enhanced.dcm")], "p").stored == 1
        (study,) = archive.studies("p")
        (series,) = archive.series(study["id"])
        view = series_view(archive, "p", series["id"])["view"]
    finally:
        archive.close()
    assert view["orderedBy"] == "position"
    assert [(i, frame, loc) for i, frame, loc in view["images"]] == [
        (0, 2, 10.0), (0, 4, 20.0), (0, 1, 30.0), (0, 3, 40.0)]
    (instance,) = view["instances"]
    assert instance["uid"] == str(ds.SOPInstanceUID)
    assert instance["frames"] == 4
    assert (instance["slope"], instance["intercept"]) == (2.0, -100.0)
    assert (instance["center"], instance["width"]) == (50.0, 350.0)
    assert view["keywords"]["00209113"] == "PlanePositionSequence"
    assert view["keywords"]["7FE00010"] == "PixelData"


def test_images_without_geometry_are_in_instance_number_order(tmp_path: Path) -> None:
    archive = Archive.open(tmp_path / "data", workers=1)
    try:
        archive.create_project("p")
        spec = SeriesSpec(slices=4, rows=8, columns=8)
        datasets = list(make_study(SyntheticPatient.make(61), series=[spec]))
        for ds, number in zip(datasets, (3, 1, 4, 2), strict=True):
            ds.InstanceNumber = number
        del datasets[2].ImageOrientationPatient  # one image without geometry
        summary = archive.ingest_bytes([(to_bytes(ds), f"{n}.dcm")
                                        for n, ds in enumerate(datasets)], "p")
        assert summary.stored == 4
        (study,) = archive.studies("p")
        (series,) = archive.series(study["id"])
        view = series_view(archive, "p", series["id"])["view"]
        with pytest.raises(NotFoundError, match="No series"):
            series_view(archive, "other", series["id"])
    finally:
        archive.close()
    assert view["orderedBy"] == "instance_number"
    numbers = [view["instances"][i]["number"] for i, _f, _loc in view["images"]]
    assert numbers == [1, 2, 3, 4]
    assert all(loc is None for _i, _f, loc in view["images"])
