"""What a failed LLM request was, in words that say what to do: HTTP errors, timeouts, connection errors.

Only called once a request failed, so importing ``openai`` in the functions costs nothing then (and
importing this module costs nothing before).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from img_agent.agent.deadline import DeadlinePassed

if TYPE_CHECKING:
    import openai

_RETRY_STATUS = frozenset({408, 409, 429})


def is_timeout(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an attempt that ran out of time (our deadline, or the SDK's read timeout)."""
    import openai

    return isinstance(exc, (DeadlinePassed, openai.APITimeoutError))


def error_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner)
        return str(inner)
    if body is not None:
        return str(body)
    return exc.message or ""


def is_retryable_status(status: int) -> bool:
    return status in _RETRY_STATUS or status >= 500


def retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if seconds >= 0:
            return seconds
    return None


def describe_failure(exc: BaseException | None) -> str:
    import openai

    if is_timeout(exc):
        return "timeout"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    return type(exc).__name__


def status_message(exc: openai.APIStatusError, endpoint: str, model: str) -> str:
    detail = error_text(exc)[:300]
    hint = {
        401: "check LLM_API_KEY",
        403: "check LLM_API_KEY and the key's permissions",
        404: f"check LLM_BASE_URL ({endpoint}) and LLM_MODEL ({model!r})",
    }.get(exc.status_code, f"check LLM_MODEL ({model!r}) and the server's logs")
    return f"The LLM at {endpoint} rejected the request with HTTP {exc.status_code}: {detail} ({hint})."


def exhausted_message(exc: BaseException | None, endpoint: str, timeout: float, attempts: int) -> str:
    import openai

    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    if is_timeout(exc):
        return (
            f"The LLM at {endpoint} did not answer within {timeout:g} s ({tries}). "
            "Check that the server is up, or raise LLM_TIMEOUT."
        )
    if isinstance(exc, openai.RateLimitError):
        return f"The LLM at {endpoint} is rate limiting requests (HTTP 429, {tries}). Wait and try again."
    if isinstance(exc, openai.APIStatusError):
        return (
            f"The LLM at {endpoint} failed with HTTP {exc.status_code} ({tries}): {error_text(exc)[:200]}. "
            "Try again later."
        )
    if isinstance(exc, openai.APIConnectionError):
        return f"Cannot reach the LLM at {endpoint} ({tries}). Check LLM_BASE_URL and that the server is running."
    return f"The LLM at {endpoint} failed ({tries})."
