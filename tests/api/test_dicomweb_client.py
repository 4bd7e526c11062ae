"""DICOMweb over real HTTP (uvicorn on loopback) with dicomweb-client as the client: QIDO-RS,
WADO-RS and STOW-RS as a research tool or a viewer uses them, and OHIF's sequence of requests.

The core paths run on SQLite and PostgreSQL (``world``); the pixel and viewer walks on SQLite.
Expected values come from the index and the stored files, never from the code under test.
"""

from __future__ import annotations

import email
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from apiworld import World
from dicomwebkit import ALPHA, GLOBAL, client, multiframe_rle, new_study, read, serve, uids_of
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from imagebank.dicom.synthetic import SyntheticPatient

STUDY, SERIES, SOP = "0020000D", "0020000E", "00080018"
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@pytest.fixture
def served(world: World) -> Iterator[str]:
    with serve(world) as url:
        yield url


@pytest.fixture
def sqlite_served(sqlite_world: World) -> Iterator[str]:
    with serve(sqlite_world) as url:
        yield url


def value(dataset: dict[str, Any], tag: str) -> Any:
    values = dataset.get(tag, {}).get("Value")
    return values[0] if values else None


def uids(datasets: list[dict[str, Any]], tag: str) -> set[str]:
    return {value(d, tag) for d in datasets}


# -- QIDO-RS ----------------------------------------------------------------------------------
def test_searches_with_filters_fuzzy_names_dates_fields_and_paging(world: World,
                                                                   served: str) -> None:
    owner = client(served + ALPHA, world, "owner")
    archive = world.runtime.archive
    indexed = {s["study_instance_uid"]: s for s in archive.studies("alpha")}
    studies = owner.search_for_studies()
    assert uids(studies, STUDY) == set(indexed)
    for dataset in studies:
        assert value(dataset, "00081190") == f"{served}{ALPHA}/studies/{value(dataset, STUDY)}"

    patient = SyntheticPatient.make(0)
    by_id = owner.search_for_studies(search_filters={"PatientID": patient.patient_id})
    assert [value(d, "00100020") for d in by_id] == [patient.patient_id]
    family = patient.name.split("^")[0]
    assert len(owner.search_for_studies(search_filters={"PatientName": f"{family}*"})) == 1
    assert owner.search_for_studies(search_filters={"00100010": f"{family.lower()}*"}) == []
    fuzzy = owner.search_for_studies(fuzzymatching=True,
                                     search_filters={"PatientName": f"{family.lower()}*"})
    assert [value(d, "00100010")["Alphabetic"] for d in fuzzy] == [patient.name]

    for date in {s["study_date"] for s in indexed.values()}:
        on_day = owner.search_for_studies(search_filters={"StudyDate": f"{date}-{date}"})
        assert uids(on_day, STUDY) == {u for u, s in indexed.items() if s["study_date"] == date}
        before = owner.search_for_studies(search_filters={"StudyDate": f"-{date}"})
        assert uids(before, STUDY) == {u for u, s in indexed.items() if s["study_date"] <= date}
    assert owner.search_for_studies(search_filters={"StudyDate": "18000101-18001231"}) == []

    described = owner.search_for_studies(fields=["StudyDescription", "00080080"])
    assert {value(d, "00081030") for d in described} == {
        s["study_description"] for s in indexed.values()}
    assert {value(d, "00080080") for d in described} == {
        s["institution_name"] for s in indexed.values()}
    everything = owner.search_for_studies(fields=["all"])
    assert all("00081030" in d and "00080080" in d for d in everything)

    first = owner.search_for_studies(limit=1)
    second = owner.search_for_studies(limit=1, offset=1)
    assert len(first) == len(second) == 1
    assert uids(first, STUDY) | uids(second, STUDY) == set(indexed)
    assert owner.search_for_studies(offset=2) == []
    raw = requests.get(f"{served}{ALPHA}/studies", params={"limit": 1}, timeout=30,
                       headers=world.headers("owner"))
    assert raw.status_code == 200 and "exceeded the maximum" in raw.headers["Warning"]

    # the global service: every project the principal may read, and only those
    admin = client(served + GLOBAL, world, "admin").search_for_studies()
    assert len(admin) == len(indexed) + len(archive.studies("beta"))
    assert uids(client(served + GLOBAL, world, "owner").search_for_studies(), STUDY) == set(
        indexed)
    assert client(served + GLOBAL, world, "outsider").search_for_studies() == []


def test_series_and_instance_searches(world: World, served: str) -> None:
    owner = client(served + ALPHA, world, "owner")
    rows = uids_of(world)
    ct = next(r for r in rows if r["sop_class_uid"].endswith(".1.2"))  # CT Image Storage
    study, series = ct["study_instance_uid"], ct["series_instance_uid"]
    found = owner.search_for_series(study)
    assert uids(found, SERIES) == {series}
    assert value(found[0], "00201209") == sum(r["series_instance_uid"] == series for r in rows)
    assert uids(owner.search_for_series(search_filters={"Modality": "CT"}), SERIES) == {series}
    assert owner.search_for_series(study, search_filters={"Modality": "MR"}) == []
    instances = owner.search_for_instances(study, series)
    assert uids(instances, SOP) == {r["sop_instance_uid"] for r in rows
                                    if r["series_instance_uid"] == series}
    assert uids(owner.search_for_instances(study), SOP) == uids(instances, SOP)
    assert len(owner.search_for_instances()) == len(rows)
    one = owner.search_for_instances(search_filters={"SOPInstanceUID": ct["sop_instance_uid"]})
    assert value(one[0], "00081190") == (f"{served}{ALPHA}/studies/{study}/series/{series}/"
                                         f"instances/{ct['sop_instance_uid']}")
    listed = owner.search_for_instances(study, series, search_filters={
        "SOPInstanceUID": ",".join(r["sop_instance_uid"] for r in rows[:2])})
    assert uids(listed, SOP) == {r["sop_instance_uid"] for r in rows[:2]
                                 if r["series_instance_uid"] == series}


# -- WADO-RS ----------------------------------------------------------------------------------
def test_retrieves_and_metadata(world: World, served: str) -> None:
    owner = client(served + ALPHA, world, "owner")
    archive = world.runtime.archive
    rows = uids_of(world)
    study = max({r["study_instance_uid"] for r in rows},
                key=lambda s: sum(r["study_instance_uid"] == s for r in rows))
    in_study = [r for r in rows if r["study_instance_uid"] == study]
    stored = {r["sop_instance_uid"]: read(archive.instance_bytes(r["id"])) for r in in_study}

    retrieved = owner.retrieve_study(study)
    assert len(retrieved) == len(in_study) >= 2
    for ds in retrieved:
        assert ds == stored[ds.SOPInstanceUID]
        assert ds.file_meta.TransferSyntaxUID == stored[ds.SOPInstanceUID].file_meta.\
            TransferSyntaxUID
    row = in_study[0]
    series = owner.retrieve_series(study, row["series_instance_uid"])
    assert {ds.SOPInstanceUID for ds in series} == set(stored)
    one = owner.retrieve_instance(study, row["series_instance_uid"], row["sop_instance_uid"])
    assert one == stored[row["sop_instance_uid"]]

    metadata = owner.retrieve_study_metadata(study)
    assert uids(metadata, SOP) == set(stored)
    for dataset in metadata:
        original = stored[value(dataset, SOP)]
        assert value(dataset, "00280010") == original.Rows
        assert value(dataset, "00100020") == original.PatientID
        uri = dataset["7FE00010"]["BulkDataURI"]
        assert uri == (f"{served}{ALPHA}/studies/{study}/series/{original.SeriesInstanceUID}/"
                       f"instances/{original.SOPInstanceUID}/bulkdata/7FE00010")
        assert owner.retrieve_bulkdata(uri) == [original.PixelData]
    assert uids(owner.retrieve_series_metadata(study, row["series_instance_uid"]), SOP) == set(
        stored)
    single = owner.retrieve_instance_metadata(study, row["series_instance_uid"],
                                              row["sop_instance_uid"])
    assert value(single, SOP) == row["sop_instance_uid"]

    # the global service: the same instance; a viewer may see its header, not its pixels
    everywhere = client(served + GLOBAL, world, "collaborator")
    assert everywhere.retrieve_instance(study, row["series_instance_uid"],
                                        row["sop_instance_uid"]) == one
    viewer = client(served + GLOBAL, world, "viewer")
    assert uids(viewer.retrieve_study_metadata(study), SOP) == set(stored)
    with pytest.raises(requests.HTTPError) as refused:
        viewer.retrieve_study(study)
    assert refused.value.response.status_code == 403
    with pytest.raises(requests.HTTPError) as hidden:
        client(served + GLOBAL, world, "outsider").retrieve_study_metadata(study)
    assert hidden.value.response.status_code == 404


# -- STOW-RS ----------------------------------------------------------------------------------
def test_store_instances(world: World, served: str) -> None:
    member = client(served + ALPHA, world, "member")
    datasets = new_study(60, slices=3)
    study = datasets[0].StudyInstanceUID
    answer = member.store_instances(datasets)
    references = answer.ReferencedSOPSequence
    assert "FailedSOPSequence" not in answer
    assert [r.ReferencedSOPInstanceUID for r in references] == [
        ds.SOPInstanceUID for ds in datasets]
    assert all(r.ReferencedSOPClassUID == datasets[0].SOPClassUID for r in references)
    assert answer.RetrieveURL == f"{served}{ALPHA}/studies/{study}"
    assert len(member.search_for_instances(study)) == 3
    stored = requests.get(references[0].RetrieveURL, headers={
        **world.headers("member"), "Accept": 'multipart/related; type="application/dicom"'},
        timeout=30)
    assert stored.status_code == 200
    assert member.retrieve_instance(study, datasets[0].SeriesInstanceUID,
                                    datasets[0].SOPInstanceUID) == datasets[0]

    count = len(uids_of(world))
    again = member.store_instances(datasets, study_instance_uid=study)  # identical: success
    assert len(again.ReferencedSOPSequence) == 3 and "FailedSOPSequence" not in again
    assert len(uids_of(world)) == count

    changed = datasets[1]
    changed.StudyDescription = "ANOTHER DESCRIPTION"
    with pytest.raises(requests.HTTPError) as conflict:
        member.store_instances([changed])
    response = conflict.value.response
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    assert [value(f, "00081155") for f in failed] == [changed.SOPInstanceUID]
    assert value(failed[0], "00081197") == 0x0111
    kept = member.search_for_studies(fields=["StudyDescription"],
                                     search_filters={"StudyInstanceUID": study})
    assert value(kept[0], "00081030") == datasets[0].StudyDescription


# -- pixels: frames, bulk data, rendered, thumbnails, transfer syntaxes ------------------------
def test_frames_transfer_syntaxes_and_rendering(sqlite_world: World, sqlite_served: str
                                                ) -> None:
    world, served = sqlite_world, sqlite_served
    ds, pixels = multiframe_rle(70, frames=3)
    member = client(served + ALPHA, world, "member")
    assert "FailedSOPSequence" not in member.store_instances([ds])
    where = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)

    as_stored = member.retrieve_instance(*where)
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(as_stored.pixel_array, pixels)
    explicit = member.retrieve_instance(*where, media_types=(
        ("application/dicom", ExplicitVRLittleEndian),))
    assert explicit.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(explicit.pixel_array, pixels)
    with pytest.raises(requests.HTTPError) as refused:
        member.retrieve_instance(*where, media_types=(
            ("application/dicom", "1.2.840.10008.1.2.4.50"),))
    assert refused.value.response.status_code == 406

    # application/octet-stream: uncompressed (decoded here); */* (the client's default) and
    # transfer-syntax=*: as stored
    frames = member.retrieve_instance_frames(*where, frame_numbers=[1, 3],
                                             media_types=("application/octet-stream",))
    assert frames == [pixels[0].tobytes(), pixels[2].tobytes()]
    rle = list(generate_frames(ds.PixelData, number_of_frames=3))
    assert member.retrieve_instance_frames(*where, frame_numbers=[2]) == [rle[1]]
    assert member.retrieve_instance_frames(*where, frame_numbers=[3, 1], media_types=(
        ("application/octet-stream", "*"),)) == [rle[2], rle[0]]
    with pytest.raises(requests.HTTPError) as missing:
        member.retrieve_instance_frames(*where, frame_numbers=[4])
    assert missing.value.response.status_code == 404

    metadata = member.retrieve_instance_metadata(*where)
    assert metadata["7FE00010"]["vr"] == "OB"
    assert member.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"]) == [pixels.tobytes()]

    png = member.retrieve_instance_rendered(*where, media_types=("image/png",))
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == (ds.Columns, ds.Rows)
    jpeg = member.retrieve_instance_rendered(*where, params={"viewport": "64,48"})
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (48, 48)  # fits 64 wide, 48 high
    narrow = member.retrieve_instance_rendered(*where, media_types=("image/png",),
                                               params={"window": "0,100,linear"})
    assert narrow != png
    third = member.retrieve_instance_frames_rendered(*where, frame_numbers=[3],
                                                     media_types=("image/png",))
    assert third.startswith(b"\x89PNG") and third != png

    for path in (f"/studies/{where[0]}", f"/studies/{where[0]}/series/{where[1]}",
                 f"/studies/{where[0]}/series/{where[1]}/instances/{where[2]}"):
        thumbnail = requests.get(f"{served}{ALPHA}{path}/thumbnail", timeout=30,
                                 headers={**world.headers("member"), "Accept": "image/jpeg"})
        assert thumbnail.status_code == 200, thumbnail.text
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumbnail.content)).size == (ds.Columns, ds.Rows)


# -- OHIF -------------------------------------------------------------------------------------
def _multipart(response: requests.Response) -> list[tuple[str, bytes]]:
    """The parts of a multipart response, read by Python's email parser."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + response.content)
    assert message.is_multipart()
    return [(part.get_content_type(), part.get_payload(decode=True))
            for part in message.get_payload()]


@pytest.mark.parametrize("base", [ALPHA, GLOBAL])
def test_the_requests_of_the_ohif_viewer(sqlite_world: World, sqlite_served: str,
                                         base: str) -> None:
    """What OHIF v3 asks, in its order: the study list, a study's series, the series'
    metadata, the frames of an image, thumbnails."""
    world = sqlite_world
    root = sqlite_served + base
    session = requests.Session()
    session.headers.update(world.headers("collaborator"))
    listed = session.get(f"{root}/studies", timeout=30, headers={
        "Accept": "application/dicom+json"}, params={
        "limit": "101", "offset": "0", "fuzzymatching": "false",
        "includefield": "00081030,00080060"})
    assert listed.status_code == 200
    assert listed.headers["content-type"] == "application/dicom+json"
    studies = listed.json()
    assert len(studies) == 2 and all("00081030" in s and "00080061" in s for s in studies)
    study = value(studies[0], STUDY)

    series = session.get(f"{root}/studies/{study}/series", timeout=30, params={
        "includefield": ["0008103E", "00080021", "00080031"]}).json()
    assert len(series) == 1 and "0008103E" in series[0]
    series_uid = value(series[0], SERIES)

    metadata = session.get(f"{root}/studies/{study}/series/{series_uid}/metadata",
                           timeout=30).json()
    assert len(metadata) == value(series[0], "00201209")
    needed = ("00280010", "00280011", "00280100", "00280103", "00280004", "00200013",
              "00200032", "00200037", "00280030", "00080016", "7FE00010")
    for dataset in metadata:
        assert all(tag in dataset for tag in needed), [t for t in needed if t not in dataset]

    instance = metadata[len(metadata) // 2]
    frames = session.get(f"{root}/studies/{study}/series/{series_uid}/instances/"
                         f"{value(instance, SOP)}/frames/1", timeout=30,
                         headers={"Accept": OHIF_FRAMES})
    assert frames.status_code == 200
    assert frames.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"')
    parts = _multipart(frames)
    stored = read(world.runtime.archive.store.get(
        next(r for r in uids_of(world) if r["sop_instance_uid"] == value(instance, SOP))[
            "object_key"]))
    assert parts == [("application/octet-stream", stored.PixelData)]

    for path in (f"/studies/{study}/thumbnail", f"/studies/{study}/series/{series_uid}/thumbnail"):
        thumbnail = session.get(f"{root}{path}", timeout=30, headers={"Accept": "image/jpeg"})
        assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\xff\xd8")
