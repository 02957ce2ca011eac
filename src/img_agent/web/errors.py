"""The JSON errors of every HTTP interface of a store: ``{"error": {"type", "message"}}`` with a fitting status.

The message is the error's own (it says what to do); an unexpected error shows only its class and
points to the service log, never a traceback.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from img_agent.errors import (
    AccessDeniedError,
    BusyError,
    ConfigError,
    ImgAgentError,
    InvalidInputError,
    LLMError,
    LLMNotConfiguredError,
    ModelLoadingError,
    NotFoundError,
    StoreReadOnlyError,
    StoreWriteError,
    VectorStoreError,
)

RETRY_AFTER_S = 5
"""Seconds a client waits before retrying a call that needs the model while it loads."""


class AuthenticationError(ImgAgentError):
    """No token, or the wrong one (HTTP 401)."""


class RequestTooLargeError(InvalidInputError):
    """A request body or upload over the size limit (HTTP 413)."""


_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthenticationError, 401), (RequestTooLargeError, 413), (AccessDeniedError, 403), (NotFoundError, 404),
    (InvalidInputError, 400), (ConfigError, 400), (ModelLoadingError, 503), (BusyError, 409),
    (LLMNotConfiguredError, 400), (LLMError, 502), (StoreReadOnlyError, 409), (StoreWriteError, 507),
    (VectorStoreError, 503),
)


def http_status(exc: BaseException) -> int:
    """The HTTP status that fits an error (JSON bodies carry the type and the message)."""
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: BaseException) -> dict:
    """``{"error": {"type", "message"}}`` for ``exc``; an unexpected error's text stays in the log."""
    if isinstance(exc, ImgAgentError):
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"error": {"type": "ImgAgentError",
                      "message": f"unexpected internal error ({type(exc).__name__}); see the service log."}}


def error_response(exc: BaseException) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(exc, ModelLoadingError) else None
    return JSONResponse(error_body(exc), status_code=http_status(exc), headers=headers)
