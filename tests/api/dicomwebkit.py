"""DICOMweb test helpers: the application served by a real uvicorn on loopback, a
dicomweb-client for it, multipart bodies, and synthetic instances beyond the API world's
(a multi-frame RLE-compressed one, one of a new study)."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import uvicorn
from apiworld import World
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from imagebank.api.app import create_app
from imagebank.dicom.synthetic import SeriesSpec, SyntheticPatient, make_study

ALPHA = "/projects/alpha/dicomweb"
GLOBAL = "/dicomweb"


@contextmanager
def serve(world: World) -> Iterator[str]:
    """The application over ``world`` under uvicorn in a thread; yields its root URL."""
    app = create_app(world.runtime, background=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                            access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def client(url: str, world: World, user: str) -> DICOMwebClient:
    return DICOMwebClient(url, headers=world.headers(user))


def multipart_body(parts: list[bytes], *, part_type: str | None = "application/dicom",
                   boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/related body of ``parts`` and its Content-Type."""
    boundary = boundary or uuid.uuid4().hex
    chunks = []
    for part in parts:
        header = f"--{boundary}\r\n"
        if part_type:
            header += f"Content-Type: {part_type}\r\n"
        chunks.append(header.encode() + b"\r\n" + part + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def new_study(patient: int, slices: int = 2, modality: str = "CT") -> list[Dataset]:
    """A synthetic study (16×16 images) of patient ``patient``."""
    spec = SeriesSpec(modality=modality, slices=slices, rows=16, columns=16)
    return list(make_study(SyntheticPatient.make(patient), series=[spec]))


def multiframe_rle(patient: int, frames: int = 3) -> tuple[Dataset, np.ndarray]:
    """A multi-frame CT instance, RLE Lossless compressed, and its pixel values."""
    ds = new_study(patient, slices=1)[0]
    rows, columns = int(ds.Rows), int(ds.Columns)
    # stored values 0-1900 (HU -1024-876): every frame spans the default window differently
    ramp = np.linspace(0, 1500, rows * columns).reshape(rows, columns)
    values = np.stack([ramp + 200 * f for f in range(frames)]).astype(np.uint16)
    ds.NumberOfFrames = frames
    ds.PixelData = values.tobytes()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.compress(RLELossless, encoding_plugin="pydicom")
    return ds, values


def read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data))


def uids_of(world: World, project: str = "alpha") -> list[dict[str, Any]]:
    """Every instance of ``project`` with its study and series UIDs (from the index)."""
    archive = world.runtime.archive
    found = []
    for study in archive.studies(project):
        for series in archive.series(study["id"]):
            for instance in archive.instances(series["id"]):
                found.append({**instance, "study_instance_uid": study["study_instance_uid"],
                              "series_instance_uid": series["series_instance_uid"]})
    return found
