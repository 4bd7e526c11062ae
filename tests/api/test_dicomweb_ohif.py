"""DICOMweb as OHIF asks for it (decision 0032): the requests its study list sends, found by
watching it in a browser (tests/api/test_ui_ohif.py opens a study in it)."""

from __future__ import annotations

from apiworld import World
from fastapi.testclient import TestClient

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes

#: What OHIF's study list sends (limit, offset, fuzzy matching, its includefield list).
OHIF_SEARCH = ("limit=101&offset=0&fuzzymatching=true"
               "&includefield=00081030%2C00080060%2C00080090%2C00100030")


def _uids(client: TestClient, world: World, query: str) -> set[str]:
    response = client.get(f"/dicomweb/studies?{OHIF_SEARCH}{query}",
                          headers={**world.headers("viewer"), "Accept": "application/dicom+json"})
    assert response.status_code == 200, response.text[:300]
    return {study["0020000D"]["Value"][0] for study in response.json()}


def test_a_filter_of_only_stars_matches_every_study(sqlite_world: World,
                                                    sqlite_client: TestClient) -> None:
    """OHIF wraps what is typed in a filter in stars: "*" typed becomes "***", which must
    match everything, as "*" does (PS3.4 C.2.2.2.4: "*" matches any value, an empty one
    too), not only the studies that have the attribute."""
    spec = SeriesSpec(modality="CT", slices=1, rows=8, columns=8)
    ds = next(iter(make_study(SyntheticPatient.make(61), series=[spec])))
    del ds.StudyDescription
    summary = sqlite_world.runtime.archive.ingest_bytes([(to_bytes(ds), "plain.dcm")], "alpha")
    assert summary.stored == 1
    plain = str(ds.StudyInstanceUID)

    everything = _uids(sqlite_client, sqlite_world, "")
    assert plain in everything and len(everything) == 3
    for stars in ("*", "**", "***"):
        assert _uids(sqlite_client, sqlite_world, f"&StudyDescription={stars}") == everything
    # a wildcard with something to match still wants a value
    assert _uids(sqlite_client, sqlite_world, "&StudyDescription=*?*") == everything - {plain}
