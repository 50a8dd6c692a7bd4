"""Exceptions raised by flatfhir, with the fields a caller needs to act on them.

Every class derives from :class:`FlatfhirError`. Texts never contain a secret (keys, tokens,
client secrets, signed URL query strings): the Rust libraries redact them before an error is
built.
"""

from __future__ import annotations

from typing import Any, Optional


class FlatfhirError(Exception):
    """Base class of every flatfhir error. ``message`` is the full text."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for k, v in fields.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class OptionsError(FlatfhirError, ValueError):
    """An option value is not valid."""


class InputError(FlatfhirError):
    """An input path does not exist, holds no NDJSON, or a requested type is not there.

    Attributes: ``path`` (str or None), ``reason`` (str or None).
    """

    path: Optional[str] = None
    reason: Optional[str] = None


class IoError(FlatfhirError, OSError):
    """Reading or writing a file failed. Attributes: ``path``."""

    path: Optional[str] = None


class BadLineError(FlatfhirError, ValueError):
    """An input line was rejected (not JSON, not UTF-8, not an object, too long, wrong type).

    Attributes: ``file`` (str), ``line`` (1-based int), ``reason`` (str). With
    ``on_error="skip"`` such lines are returned as :class:`Rejected` records instead.
    """

    file: str = ""
    line: int = 0
    reason: str = ""


class SchemaError(FlatfhirError):
    """Two JSON paths flatten to one column name, or a type has too many columns.

    Attributes: ``resource_type``.
    """

    resource_type: Optional[str] = None


class ViewError(FlatfhirError):
    """A ViewDefinition or FHIRPath expression is invalid or failed on a resource.

    Attributes: ``view`` (the view's name, when known).
    """

    view: Optional[str] = None


class FetchError(FlatfhirError):
    """Base class of Bulk Data client errors."""


class AuthError(FetchError):
    """Authentication failed: a key that cannot be read or used, no token endpoint, or a
    token request the server refused.

    Attributes (where they apply): ``path`` (key file), ``url`` (redacted), ``status``
    (HTTP status), ``server_message`` (the server's ``error``/``error_description``).
    """

    path: Optional[str] = None
    url: Optional[str] = None
    status: Optional[int] = None
    server_message: Optional[str] = None


class HttpError(FetchError):
    """A request could not be sent or its answer not read (connection, TLS, timeout).

    Attributes: ``url`` (redacted), ``cause``.
    """

    url: Optional[str] = None
    cause: Optional[str] = None


class ServerError(FetchError):
    """The server refused or failed the export (kick-off, status, manifest, download).

    Attributes: ``url`` (redacted), ``status`` (HTTP status, when there is one),
    ``server_message`` (the OperationOutcome's text, or the start of the body).
    """

    url: Optional[str] = None
    status: Optional[int] = None
    server_message: Optional[str] = None


class ContentError(FetchError):
    """A downloaded file's content is wrong. Attributes: ``file``, ``line``, ``reason``."""

    file: str = ""
    line: int = 0
    reason: str = ""


class ExportTimeoutError(FetchError, TimeoutError):
    """The export did not complete within ``max_wait``; resume it later."""


class JobError(FetchError):
    """The output directory's job state does not allow the operation (e.g. an export is
    already recorded there and ``resume`` was not asked for)."""


__all__ = [
    "AuthError",
    "BadLineError",
    "ContentError",
    "ExportTimeoutError",
    "FetchError",
    "FlatfhirError",
    "HttpError",
    "InputError",
    "IoError",
    "JobError",
    "OptionsError",
    "SchemaError",
    "ServerError",
    "ViewError",
]
