"""Write the REST API's OpenAPI document to tests/api/openapi.snapshot.json.

The snapshot is committed, so that a change to the API shows in review as a change to this
file; tests/api/test_openapi_snapshot.py fails while the two differ. Run after changing the
API (``make openapi``)::

    .venv/bin/python scripts/update_openapi_snapshot.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).resolve().parent.parent / "tests" / "api" / "openapi.snapshot.json"


def openapi_document() -> dict[str, Any]:
    """The document of ``create_app`` over an empty archive (it does not depend on data)."""
    from imagebank.api.app import create_app
    from imagebank.services.archive import Archive
    from imagebank.services.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="imagebank-openapi-") as folder:
        archive = Archive.open(Path(folder) / "data", workers=1)
        try:
            return create_app(Runtime.for_archive(archive), background=False).openapi()
        finally:
            archive.close()


def render(document: dict[str, Any]) -> str:
    """The snapshot's text: sorted keys, indent 2, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    text = render(openapi_document())
    if SNAPSHOT.exists() and SNAPSHOT.read_text(encoding="utf-8") == text:
        print(f"{SNAPSHOT.name} is up to date.")
        return 0
    SNAPSHOT.write_text(text, encoding="utf-8")
    print(f"Wrote {SNAPSHOT}: review the change and commit it with the API change.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
