"""Running the API under uvicorn, with the checks that keep a default set-up on loopback."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from typing import Any

from imagebank.domain.errors import ConfigurationError, NotFoundError
from imagebank.services.archive import Archive
from imagebank.services.runtime import Runtime

DEMO_ADMIN = "admin"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(runtime: Runtime, host: str) -> None:
    """Refuse to listen beyond loopback without an administrator and a real secret key."""
    if is_loopback(host):
        return
    if runtime.archive.settings.uses_default_secret:
        raise ConfigurationError(
            f"Refusing to listen on {host}: the secret key is the built-in default. Set "
            "IMAGEBANK_SECRET_KEY to a long random value (e.g. `python -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'`).")
    if not runtime.accounts.has_admin():
        raise ConfigurationError(
            f"Refusing to listen on {host}: there is no administrator. Add one with "
            "`imagebank user add NAME --admin`.")


def demo_password() -> str:
    return "-".join(secrets.token_urlsafe(6) for _ in range(4))


def ensure_demo_admin(runtime: Runtime) -> str:
    """Create user 'admin' (or give it a new password) and return the password."""
    password = demo_password()
    accounts = runtime.accounts
    try:
        accounts.get_user(DEMO_ADMIN)
    except NotFoundError:
        accounts.add_user(DEMO_ADMIN, password, admin=True)
    else:
        accounts.set_password(DEMO_ADMIN, password)
    runtime.audit.admin_event("serve", "user_password", route="cli demo_admin", level="user",
                              object_id=DEMO_ADMIN)
    return password


def worker_app() -> Any:
    """The application of one process of a multi-process server (settings from the
    environment, which the parent set)."""
    from imagebank.api.app import create_app

    return create_app(Runtime.for_archive(Archive.open()), requeue=False)


def serve_archive(archive: Archive, *, host: str, port: int, demo_admin: bool = False,
                  console: Any = None, workers: int | None = None,
                  dicom_port: int | None = None) -> None:
    workers = workers or archive.settings.server_workers
    runtime = Runtime.for_archive(archive)
    if demo_admin and not is_loopback(host):
        raise ConfigurationError("--demo-admin is for a server on loopback only.")
    check_exposure(runtime, host)
    password = ensure_demo_admin(runtime) if demo_admin else None
    shown = f"[{host}]" if ":" in host else host
    if console is not None:
        console.print(f"imagebank serving [bold]{archive.settings.data}[/] at "
                      f"[bold]http://{shown}:{port}/[/] (API docs: /api/docs)", highlight=False)
        if password:
            console.print(f"administrator: [bold]{DEMO_ADMIN}[/]  password: [bold]{password}"
                          "[/]", highlight=False)
    dicom_port = dicom_port if dicom_port is not None else archive.settings.dicom_port
    listener = None
    if dicom_port is not None:
        # In the first process only: one listener per port (its associations are threads).
        from imagebank.dimse.scp import DicomListener

        runtime.audit.start()
        listener = DicomListener(runtime, host, dicom_port, archive.settings.dicom_ae_title)
        listener.start()
        if console is not None:
            console.print(f"DICOM listener {archive.settings.dicom_ae_title} on "
                          f"{host}:{listener.port}", highlight=False)
    try:
        _run_uvicorn(archive, runtime, host, port, workers)
    finally:
        if listener is not None:
            listener.stop()
            runtime.audit.stop()


def _run_uvicorn(archive: Archive, runtime: Runtime, host: str, port: int,
                 workers: int) -> None:
    import uvicorn

    from imagebank.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn's access log would print query strings (a PatientID search): ours does not.
    options: dict[str, Any] = {"host": host, "port": port, "access_log": False,
                               "log_level": "info", "server_header": False,
                               "timeout_graceful_shutdown": 10}
    if workers <= 1:
        uvicorn.run(create_app(runtime), **options)
        return
    # Several processes: each opens the archive from the environment; jobs interrupted by
    # the last server are requeued here, once, before any worker's runner starts.
    runtime.jobs.requeue_interrupted()
    os.environ["IMAGEBANK_DATA"] = str(archive.settings.data.resolve())
    uvicorn.run("imagebank.api.server:worker_app", factory=True, workers=workers, **options)
