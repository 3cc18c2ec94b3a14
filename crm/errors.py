"""Errors that services raise; pages and the API each render them in their own way."""

from __future__ import annotations

from flask_babel import gettext as _


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class BadRequestError(ServiceError):
    """A request that cannot be read at all (its body, say); field mistakes are a 422."""

    status = 400
    code = "bad_request"


class ValidationError(ServiceError):
    status = 422
    code = "validation_error"

    def __init__(self, fields: dict[str, str], message: str | None = None):
        super().__init__(message or _("Please correct the highlighted fields."), fields)


def file_too_large(max_bytes: int) -> ValidationError:
    """The refusal of an uploaded file over `max_bytes`, said in whole megabytes."""
    return ValidationError({"file": _("The file is too large: at most %(mb)d MB.",
                                      mb=max_bytes // (1024 * 1024))})


class ConflictError(ServiceError):
    status = 409
    code = "conflict"


class NotFoundError(ServiceError):
    status = 404
    code = "not_found"


class PermissionDeniedError(ServiceError):
    status = 403
    code = "forbidden"


class AuthenticationError(ServiceError):
    status = 401
    code = "unauthorized"
