"""WADO-RS pixel resources of an instance: frames, bulk data, rendered images and thumbnails
(PS3.18 8.3.5, 8.4, 9.5), made by ``dicom.pixels`` from the stored object.

A thumbnail of a study or a series is the thumbnail of a representative instance: the
middle image of the (first) series, as Orthanc and dcm4chee do.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request, Response

from imagebank.api import multipart
from imagebank.api.dicomweb_common import instances
from imagebank.api.dicomweb_media import (
    negotiate_bulkdata,
    negotiate_frames,
    negotiate_rendered,
)
from imagebank.api.security import runtime_of
from imagebank.dicom import pixels, rendering
from imagebank.domain.access import Permission
from imagebank.domain.errors import InvalidInputError, NotFoundError

FRAME_LIST = r"^[0-9]{1,9}(,[0-9]{1,9})*$"
TAG = r"^[0-9A-Fa-f]{8}$"
THUMBNAIL_SIZE = 128
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "linear_exact":
              "LINEAR_EXACT", "sigmoid": "SIGMOID"}


def _data(request: Request, row: dict[str, Any]) -> bytes:
    return runtime_of(request).archive.store.get(row["object_key"])


def _instance(request: Request, study_uid: str, series_uid: str, sop_uid: str
              ) -> dict[str, Any]:
    return instances(request, Permission.DOWNLOAD, study_uid, series_uid, sop_uid)[0]


def frames(request: Request, study_uid: str, series_uid: str, sop_uid: str,
           frame_list: str) -> Response:
    """Frames, one part each (PS3.18 8.3.5.1.2 / 10.4.1.1.4)."""
    syntaxes = negotiate_frames(request.headers.get("accept"))
    numbers = [int(n) for n in frame_list.split(",")]
    if len(set(numbers)) != len(numbers):  # PS3.18: a list of non-duplicate frame numbers
        raise InvalidInputError("A frame list names each frame once (no duplicates).",
                                code="invalid_frame")
    row = _instance(request, study_uid, series_uid, sop_uid)
    media_type, values = pixels.frames(_data(request, row), numbers, syntaxes)
    boundary = multipart.new_boundary()
    body = b"".join(multipart.encode(boundary, ((media_type, v) for v in values)))
    part_type = media_type.split(";", 1)[0].strip()
    return Response(body, media_type=multipart.content_type(boundary, part_type))


def bulkdata(request: Request, study_uid: str, series_uid: str, sop_uid: str, tag: str
             ) -> Response:
    """The value of one binary element (PS3.18 8.4.1)."""
    as_multipart = negotiate_bulkdata(request.headers.get("accept"))
    row = _instance(request, study_uid, series_uid, sop_uid)
    media_type, value = pixels.bulkdata(_data(request, row), int(tag, 16))
    if not as_multipart:
        return Response(value, media_type=media_type)
    boundary = multipart.new_boundary()
    body = b"".join(multipart.encode(boundary, iter([(media_type, value)])))
    part_type = media_type.split(";", 1)[0].strip()
    return Response(body, media_type=multipart.content_type(boundary, part_type))


def _window(text: str | None) -> tuple[float, float, str] | None:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.3; function linear, linear-exact
    or sigmoid, linear by default)."""
    if text is None:
        return None
    values = [v.strip() for v in text.split(",")]
    if len(values) not in (2, 3) or not all(_NUMBER.fullmatch(v) for v in values[:2]):
        raise InvalidInputError("window is center,width[,function]: two numbers and "
                                "optionally linear, linear-exact or sigmoid.",
                                code="invalid_window")
    function = _FUNCTIONS.get(values[2].lower()) if len(values) == 3 else "LINEAR"
    if function is None:
        raise InvalidInputError("The window function is linear, linear-exact or sigmoid.",
                                code="invalid_window")
    return float(values[0]), float(values[1]), function


def _viewport(text: str | None) -> tuple[int, int] | None:
    """``viewport=vw,vh`` (PS3.18 8.3.5.1.3: width, then height) as (rows, columns)."""
    if text is None:
        return None
    values = [v.strip() for v in text.split(",")]
    if len(values) != 2 or not all(v.isdigit() and 0 < len(v) <= 5 for v in values):
        raise InvalidInputError("viewport is vw,vh: the width and height in pixels (cropping "
                                "with sx,sy,sw,sh is not supported).", code="invalid_viewport")
    return int(values[1]), int(values[0])


def rendered(request: Request, study_uid: str, series_uid: str, sop_uid: str,
             frame: int = 1, *, window: str | None = None, viewport: str | None = None,
             quality: int | None = None) -> Response:
    """A frame rendered for display (PS3.18 9.5), image/jpeg by default or image/png."""
    media_type = negotiate_rendered(request.headers.get("accept"))
    voi, size = _window(window), _viewport(viewport)
    row = _instance(request, study_uid, series_uid, sop_uid)
    image = rendering.render(_data(request, row), frame, media_type=media_type, window=voi,
                          viewport=size, quality=quality)
    return Response(image, media_type=media_type)


def representative(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The middle image of the first series among ``rows`` (in archive order)."""
    images = [r for r in rows if r.get("rows")]
    if not images:
        raise NotFoundError("There is no image here to make a thumbnail of.")
    series = images[0]["series_id"]
    first = [r for r in images if r["series_id"] == series]
    return first[len(first) // 2]


def thumbnail(request: Request, study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None, *, viewport: str | None = None) -> Response:
    """A small rendering of a study, series or instance (PS3.18 9.5.1.2.1)."""
    media_type = negotiate_rendered(request.headers.get("accept"))
    size = _viewport(viewport)
    rows = instances(request, Permission.DOWNLOAD, study_uid, series_uid, sop_uid)
    row = representative(rows)
    image = rendering.thumbnail(_data(request, row), media_type=media_type,
                             size=max(size) if size else THUMBNAIL_SIZE)
    return Response(image, media_type=media_type)
