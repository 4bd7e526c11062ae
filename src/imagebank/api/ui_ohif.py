"""The OHIF viewer at ``/ohif/`` (decision 0032), for users who want a full diagnostic viewer.

``make ohif`` puts the prebuilt OHIF 3 app (``npm pack @ohif/app``, its ``dist/``) in the
folder of ``IMAGEBANK_OHIF_DIR``; nothing of it is committed and nothing is fetched at run
time. The build expects to be served at ``/``: its ``index.html``, its webpack runtime
(``__webpack_require__.p``), its style sheets' fonts and one dynamic import name root paths.
Those few strings are rebased onto ``/ohif/`` as the files are sent (``REBASE``; a build made
with ``PUBLIC_URL=/ohif/`` is sent unchanged), and ``window.config.routerBasename`` is
``/ohif``. ``app-config.js`` is ours, not the package's: OHIF reads this server's DICOMweb
(``/dicomweb``: every project the user may read) on the same origin, so the session cookie
authorises every request it makes and the rules of decision 0007 apply to it unchanged.

OHIF is opened on one study, from the "Open in OHIF" link of our study page (``viewer_url``).
Its study list is off (``showStudyList: false``): it keeps its filters (PatientName, MRN) in
its page's address, and no page address may hold patient data; ``/ohif/`` itself is sent to
our projects page. Client routes of the app (``/ohif/viewer?StudyInstanceUIDs=...``) are
answered with its ``index.html``; a path with a file's suffix that is not a file is 404.
Every response under ``/ohif/`` isolates the page (COOP/COEP, so that OHIF may use
SharedArrayBuffer) and never sends a referrer. The routes are public (a static app), but
the app's page itself sends a browser without a session to the sign-in page first.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from imagebank.api.security import public, resolve_principal, runtime_of
from imagebank.api.ui import SIGN_IN, problem_page
from imagebank.domain.errors import AuthenticationError, NotFoundError

router = APIRouter(include_in_schema=False)

MOUNT = "/ohif/"
ROUTER_BASENAME = "/ohif"
#: Where /ohif/ itself sends the browser: OHIF's study list is off, studies are found here.
STUDY_LIST = "/ui/projects"
#: Where OHIF finds our DICOMweb, relative to the page's origin (decision 0013).
DICOMWEB_ROOT = "/dicomweb"
CONFIG = "app-config.js"
INDEX = "index.html"
#: On every response under /ohif/: a cross-origin isolated page (SharedArrayBuffer for
#: OHIF's volume viewports; every resource it loads is same-origin), no referrer (its URLs
#: carry UIDs), no sniffing, no framing by another site.
HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Embedder-Policy": "require-corp",
           "Cross-Origin-Resource-Policy": "same-origin",
           "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "SAMEORIGIN"}
#: Files named by their content hash (webpack's chunks, wasm, fonts) never change.
HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.[a-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".json": "application/json", ".jsonc": "application/json",
               ".map": "application/json", ".wasm": "application/wasm",
               ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
               ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf",
               ".xml": "application/xml", ".webapp": "application/x-web-app-manifest+json",
               ".txt": "text/plain; charset=utf-8", ".onnx": "application/octet-stream"}
#: What a build for "/" names at the root, by file suffix: (pattern, replacement). Each
#: pattern leaves a path already under /ohif/ alone.
REBASE: dict[str, tuple[tuple[re.Pattern[bytes], bytes], ...]] = {
    ".html": ((re.compile(rb'(?<==)"/(?!/|ohif/)'), b'"/ohif/'),),  # src="/, PUBLIC_URL="/"
    ".js": ((re.compile(rb'__webpack_require__\.p = "/";'), b'__webpack_require__.p = "/ohif/";'),
            (re.compile(rb"\('/dicom-microscopy-viewer/"), b"('/ohif/dicom-microscopy-viewer/")),
    ".css": ((re.compile(rb"url\(/(?!/|ohif/)"), b"url(/ohif/"),),
    ".json": ((re.compile(rb'"/assets/'), b'"/ohif/assets/'),),  # manifest.json's icons
}
_TEXT_SUFFIXES = frozenset(REBASE)


def ohif_dir(request: Request) -> Path:
    """The folder of OHIF's built app (IMAGEBANK_OHIF_DIR)."""
    return Path(runtime_of(request).archive.settings.ohif_dir)


def installed(folder: Path) -> bool:
    return (folder / INDEX).is_file()


def viewer_url(study_instance_uid: str) -> str:
    """The address of a study in OHIF, for a page that links to it (the UID is a DICOM UID,
    which the QIDO/WADO URLs carry anyway; never a patient identifier). The UID is
    percent-encoded whole: whatever an odd file put in it stays one query value."""
    return f"{MOUNT}viewer?StudyInstanceUIDs={quote(study_instance_uid, safe='')}"


def app_config() -> str:
    """OHIF's ``window.config``: one DICOMweb data source, this server's ``/dicomweb`` on
    the page's origin; no upload (STOW-RS goes to a project's address), no study list (its
    filters would put patient data in the page's address: studies are found on our pages)."""
    source = {
        "friendlyName": "imagebank", "name": "imagebank",
        "qidoSupportsIncludeField": True, "supportsFuzzyMatching": True,
        "supportsWildcard": True, "supportsReject": False, "dicomUploadEnabled": False,
        "imageRendering": "wadors", "thumbnailRendering": "thumbnail",
        "thumbnailRequestStrategy": "fetch", "enableStudyLazyLoad": True,
        "singlepart": "bulkdata,video,pdf",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
    }
    config = {
        "routerBasename": ROUTER_BASENAME, "showStudyList": False,
        "extensions": [], "modes": [], "customizationService": {},
        "maxNumberOfWebWorkers": 3, "showWarningMessageForCrossOrigin": True,
        "showCPUFallbackMessage": True, "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True, "groupEnabledModesFirst": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "dev",  # never a stack trace in production
        "defaultDataSourceName": "imagebank",
        "dataSources": [{"namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                         "sourceName": "imagebank", "configuration": source}],
    }
    root = json.dumps(DICOMWEB_ROOT)
    return ("/* imagebank: OHIF on this server's DICOMweb (decision 0032). */\n"
            f"window.config = {json.dumps(config, indent=2)};\n"
            "(function (source) {\n"
            f"  var root = window.location.origin + {root};\n"
            "  source.qidoRoot = root;\n  source.wadoRoot = root;\n  source.wadoUriRoot = root;\n"
            "})(window.config.dataSources[0].configuration);\n")


@dataclass(frozen=True, slots=True)
class _Rebased:
    """A text file as sent: its content rebased onto /ohif/ (None: unchanged) and ETag."""

    content: bytes | None
    etag: str


class _RebaseCache:
    """Rebased files by (path, size, modification time): each is read and rebased once."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int], _Rebased]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> _Rebased:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            entry = self._entries.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
        original = path.read_bytes()
        content = original
        for pattern, replacement in REBASE[path.suffix]:
            content = pattern.sub(replacement, content)
        rebased = _Rebased(content if content != original else None,
                           '"' + hashlib.sha256(content).hexdigest()[:32] + '"')
        with self._lock:
            self._entries[path] = (key, rebased)
        return rebased


_CACHE = _RebaseCache()


def _media_type(path: Path) -> str:
    return (MEDIA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
            or "application/octet-stream")


def _send(request: Request, path: Path, cache_control: str) -> Response:
    """The file, rebased if it must be, with its ETag (304 when the browser has it)."""
    headers = {**HEADERS, "Cache-Control": cache_control}
    rebased = _CACHE.get(path) if path.suffix in _TEXT_SUFFIXES else None
    if rebased is not None and rebased.content is not None:
        headers["ETag"] = rebased.etag
    else:
        rebased = None
        stat = path.stat()
        headers["ETag"] = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    if rebased is not None:
        return Response(rebased.content, media_type=_media_type(path), headers=headers)
    return FileResponse(path, media_type=_media_type(path), headers=headers)


def _inside(folder: Path, relative: str) -> Path | None:
    """``folder/relative`` when it is a file inside ``folder`` (after resolving ``..`` and
    links), else None."""
    root = folder.resolve()
    try:
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop, a NUL byte
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def _signed_in(request: Request) -> bool:
    try:
        return resolve_principal(request) is not None
    except AuthenticationError:  # an ended session: sign in again
        return False


def _document(request: Request, folder: Path) -> Response:
    """The app's page (index.html): for a client route of OHIF too."""
    if not _signed_in(request):
        return RedirectResponse(SIGN_IN, status_code=303)
    return _send(request, folder / INDEX, REVALIDATE)


def _not_installed(request: Request) -> Response:
    return problem_page(
        request, 503, "OHIF is not installed",
        "The OHIF viewer is not installed on this server; an administrator can install it "
        "with `make ohif` (or set IMAGEBANK_OHIF_DIR to its folder).")


@router.get(MOUNT, dependencies=[public])
def ohif_home() -> Response:
    """Not OHIF's study list (it is off): our projects page, where studies are found and
    each links to OHIF."""
    return RedirectResponse(STUDY_LIST, status_code=303)


@router.get(MOUNT + "{path:path}", dependencies=[public])
def ohif_file(request: Request, path: str) -> Response:
    """A file of the OHIF app, our ``app-config.js``, or (a client route of the app) its
    ``index.html``."""
    if path == CONFIG:
        return Response(app_config(), media_type=MEDIA_TYPES[".js"],
                        headers={**HEADERS, "Cache-Control": REVALIDATE})
    folder = ohif_dir(request)
    if not installed(folder):
        return _not_installed(request)
    found = _inside(folder, path)
    if found is not None:
        if found.name == INDEX:
            return _document(request, folder)
        return _send(request, found, IMMUTABLE if HASHED.search(found.name) else REVALIDATE)
    if "." in path.rsplit("/", 1)[-1] or ".." in path.split("/"):
        raise NotFoundError("There is no such file of the OHIF viewer.")
    return _document(request, folder)
