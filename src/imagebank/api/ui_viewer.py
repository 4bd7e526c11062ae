"""Web UI pages (decision 0027): the series viewer (decision 0029).

The page carries the series' images in display order (by position along the slice normal,
``services.viewer``) and how to turn each instance's stored values into grey levels;
viewer.js fetches the pixels from the project's WADO-RS frames (raw values, windowed on a
canvas in the browser) or, for what it cannot window itself, rendered images, and each
instance's header from WADO-RS metadata. Pixels need the download permission, so the page
does too: a viewer-role user gets the 403 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from imagebank.api.security import project_access, runtime_of
from imagebank.api.ui import page
from imagebank.domain.access import Permission
from imagebank.services.viewer import series_view

router = APIRouter(include_in_schema=False)
ID = r"^[0-9a-f]{32}$"

#: Window presets of a CT series (center, width in Hounsfield units), as buttons and keys 1-4.
CT_PRESETS = (("lung", "Lung", -600, 1500), ("soft", "Soft tissue", 40, 400),
              ("bone", "Bone", 400, 1800), ("brain", "Brain", 40, 80))
#: Presets of any other modality, whose values have no fixed scale: the image's own window
#: (its first WindowCenter/WindowWidth) and the range of its values, computed by viewer.js.
IMAGE_PRESETS = (("own", "Image's own", None, None), ("range", "Full range", None, None))


def presets_for(modality: str) -> tuple[tuple[str, str, int | None, int | None], ...]:
    """The window presets offered for a series of ``modality``: Hounsfield-unit ones for CT
    only (PS3.3 C.8.2.1: CT values are HU once rescaled), the image's own elsewhere."""
    return CT_PRESETS if modality.strip().upper() == "CT" else IMAGE_PRESETS


@router.get("/ui/projects/{project}/series/{series}/view", response_class=HTMLResponse,
            dependencies=[project_access(Permission.DOWNLOAD, "read")])
def series_viewer(request: Request, project: str, series: str = Path(pattern=ID)
                  ) -> HTMLResponse:
    """A series in the viewer: its images in order, windowed, with the DICOM header."""
    archive = runtime_of(request).archive
    found = series_view(archive, project, series)
    return page(request, "viewer.html", project=archive.ensure_project(project),
                series=found["series"], study=found["study"], view=found["view"],
                presets=presets_for(found["view"]["modality"]))
