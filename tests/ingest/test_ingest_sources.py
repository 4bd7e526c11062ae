"""Where objects come from: folders (recursively, in a stable order), files, zip archives."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from imagebank.domain.errors import InvalidInputError
from imagebank.ingest.sources import Source, SourceProblem, iter_sources


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_is_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("b.dcm", "a.dcm", "sub/z.dcm", "sub/deeper/y.dcm", "a2/c.dcm", ".hidden"):
        _touch(root / rel, rel.encode())
    (root / "empty-folder").mkdir()
    items = list(iter_sources([root]))
    assert all(isinstance(i, Source) for i in items)
    labels = [os.path.relpath(i.label, root) for i in items]
    assert labels == [".hidden", "a.dcm", "b.dcm", "a2/c.dcm", "sub/z.dcm", "sub/deeper/y.dcm"]
    sizes = {os.path.relpath(i.path, root): i.size for i in items if isinstance(i, Source)}
    assert sizes["sub/deeper/y.dcm"] == len(b"sub/deeper/y.dcm")


def test_single_files_and_several_paths(tmp_path: Path) -> None:
    a = _touch(tmp_path / "a.dcm", b"12345")
    b = _touch(tmp_path / "dir" / "b.dcm")
    items = list(iter_sources([a, tmp_path / "dir"]))
    assert items == [Source(str(a), None, 5), Source(str(b), None, 1)]


def test_zip_members_with_subfolders(tmp_path: Path) -> None:
    archive = tmp_path / "upload.ZIP"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("top.dcm", b"1")
        z.writestr("patient/study/series/x.dcm", b"22")
        z.writestr("patient/study/", b"")  # a folder entry: not an object
        z.writestr("other/y.dcm", b"333")
    items = list(iter_sources([archive]))
    assert items == [
        Source(str(archive), "other/y.dcm", 3),
        Source(str(archive), "patient/study/series/x.dcm", 2),
        Source(str(archive), "top.dcm", 1),
    ]
    assert items[0].label == f"{archive}!other/y.dcm"


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_damaged_zip_is_a_problem_not_an_exception(tmp_path: Path, content: bytes) -> None:
    bad = _touch(tmp_path / "bad.zip", content)
    good = _touch(tmp_path / "good.dcm")
    items = list(iter_sources([tmp_path]))
    assert len(items) == 2
    problem = items[0]
    assert isinstance(problem, SourceProblem)
    assert problem.label == str(bad) and problem.reason == "bad_archive"
    assert items[1] == Source(str(good), None, 1)


def test_truncated_zip_is_a_problem(tmp_path: Path) -> None:
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as z:
        for i in range(5):
            z.writestr(f"f{i}.dcm", os.urandom(2000))
    cut = _touch(tmp_path / "cut" / "cut.zip", whole.read_bytes()[:3000])
    (problem,) = list(iter_sources([cut]))
    assert isinstance(problem, SourceProblem) and problem.reason == "bad_archive"


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        list(iter_sources([tmp_path / "nope"]))


def test_nothing_in_a_folder_is_skipped_silently(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _touch(root / "sub" / "a.dcm")
    target = tmp_path / "elsewhere"
    _touch(target / "hidden-behind-link.dcm")
    (root / "link-to-folder").symlink_to(target, target_is_directory=True)
    (root / "broken-link").symlink_to(tmp_path / "does-not-exist")
    os.mkfifo(root / "pipe")
    (root / "link-to-file").symlink_to(root / "sub" / "a.dcm")
    items = list(iter_sources([root]))
    problems = {os.path.basename(i.label): i.reason for i in items
                if isinstance(i, SourceProblem)}
    files = sorted(os.path.relpath(i.path, root) for i in items if isinstance(i, Source))
    assert problems == {"link-to-folder": "unreadable_source",
                        "broken-link": "unreadable_source", "pipe": "unreadable_source"}
    assert files == ["link-to-file", "sub/a.dcm"]
