"""One exception tree: every error a user can see says what went wrong and what to do.

STYLE.md practice 8. Messages never carry patient data (names, IDs, dates, UIDs of patients):
they name internal IDs, counts and settings only.
"""

from __future__ import annotations


class ImagebankError(Exception):
    """Base of every error imagebank raises on purpose.

    ``code`` is machine-readable and stable; ``str(error)`` is a sentence a person can act on.
    """

    code: str = "error"
    #: HTTP status the API maps this error to.
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class ConfigurationError(ImagebankError):
    code = "configuration"
    status = 500


class NotFoundError(ImagebankError):
    code = "not_found"
    status = 404


class ConflictError(ImagebankError):
    code = "conflict"
    status = 409


class InvalidInputError(ImagebankError):
    code = "invalid_input"
    status = 400


class UnsupportedMediaTypeError(InvalidInputError):
    """The request's body is of a type this address does not take."""

    code = "unsupported_media_type"
    status = 415


class NotAcceptableError(InvalidInputError):
    """None of the representations the request accepts can be produced (a media type or
    transfer syntax this archive cannot make of that object)."""

    code = "not_acceptable"
    status = 406


class StorageError(ImagebankError):
    code = "storage"
    status = 503


class IntegrityError(ImagebankError):
    """The index and the object store disagree, or an object's checksum is wrong."""

    code = "integrity"
    status = 500


class AuthenticationError(ImagebankError):
    """No valid credentials: sign in or send a token."""

    code = "unauthenticated"
    status = 401


class PermissionDeniedError(ImagebankError):
    """Known to the requester, but their role does not allow this."""

    code = "forbidden"
    status = 403


class ThrottledError(ImagebankError):
    """Too many attempts; ``retry_after`` seconds until the next is considered."""

    code = "throttled"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
