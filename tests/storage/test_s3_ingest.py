"""An ingest end to end with the objects in S3 (moto's server on loopback), in worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study, to_bytes
from imagebank.services.archive import Archive
from imagebank.storage.s3 import S3ObjectStore


def test_ingest_into_s3(tmp_path: Path, s3_bucket: str, s3_client: Any,
                        moto_endpoint: str) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    patients = [SyntheticPatient.make(n) for n in range(3)]
    secrets: set[str] = set()
    count = 0
    for patient in patients:
        secrets.update({patient.patient_id, patient.name, patient.birth_date,
                        *patient.name.split("^")})
        for ds in make_study(patient, series=[SeriesSpec(slices=3, rows=32, columns=32)]):
            secrets.update({str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                            str(ds.SOPInstanceUID)})
            (folder / f"{count:03d}.dcm").write_bytes(to_bytes(ds))
            count += 1
    assert count == 9

    archive = Archive.open(tmp_path / "data", store=f"s3://{s3_bucket}/prefix",
                           s3_endpoint_url=moto_endpoint, workers=2)
    try:
        assert isinstance(archive.store, S3ObjectStore)
        archive.create_project("p")
        summary = archive.ingest([folder], "p")
        assert summary.stored == count

        report = archive.check(verify_checksums=True)
        assert report.ok, report.as_dict()
        assert report.instances_checked == count
        assert report.objects_seen == count

        pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        assert len(keys) == count  # no staging leftovers
        assert all(k.startswith("prefix/p/dicom/") for k in keys), keys
        assert sorted(archive.store.keys()) == sorted(k[len("prefix/"):] for k in keys)
        for key in keys:
            for secret in secrets:
                assert secret not in key

        # Ingesting the same files again stores nothing new and leaves no staging behind.
        again = archive.ingest([folder], "p")
        assert again.stored == 0
        assert again.duplicates == count
        pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        assert sorted(o["Key"] for page in pages for o in page.get("Contents", [])) == \
            sorted(keys)
    finally:
        archive.close()
