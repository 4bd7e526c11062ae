"""The curated public API is pinned: adding or removing a name is a deliberate change."""

import imagebank

EXPECTED = {
    "Archive",
    "CheckReport",
    "ConfigurationError",
    "ConflictError",
    "ImagebankError",
    "IngestSummary",
    "IntegrityError",
    "InvalidInputError",
    "Level",
    "NotFoundError",
    "QuarantineReason",
    "Settings",
    "StorageError",
    "__version__",
}


def test_public_names_are_pinned() -> None:
    assert set(imagebank.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in imagebank.__all__:
        assert getattr(imagebank, name) is not None


def test_errors_form_one_tree() -> None:
    for name in ("ConfigurationError", "ConflictError", "IntegrityError", "InvalidInputError",
                 "NotFoundError", "StorageError"):
        error = getattr(imagebank, name)
        assert issubclass(error, imagebank.ImagebankError)
        assert 400 <= error.status < 600


def test_archive_api_round_trip(tmp_path, corpus) -> None:
    with imagebank.Archive.open(tmp_path / "data", workers=1) as archive:
        archive.create_project("p")
        summary = archive.ingest([corpus], "p")
        assert isinstance(summary, imagebank.IngestSummary)
        assert summary.stored == len(list(corpus.rglob("*.dcm")))
        studies = archive.studies("p")
        assert len(studies) == 4
        assert {s["patient_id"] for s in studies} == {"SYN0000000", "SYN0000001", "SYN0000002"}
