"""A small client for any OpenAI-compatible chat endpoint, with bounded retries and fallbacks.

:class:`LLMClient` wraps the ``openai`` package's ``OpenAI`` client built from
:class:`~img_agent.config.LLMSettings`. Every call:

- has a total deadline per request (``LLMSettings.timeout``: connecting, sending and reading the
  whole answer; a request still running then is abandoned, see :mod:`img_agent.agent.deadline`)
  and a bounded number of retries on timeouts, connection errors, HTTP 408/409/429 and 5xx, with
  capped exponential backoff (a server's ``Retry-After`` is honoured up to
  :data:`MAX_RETRY_WAIT` seconds). The retry loop is ours, not the SDK's (the SDK is built with
  ``max_retries=0``);
- counts its time against the budget of the command it runs in (``LLMSettings.deadline``, opened
  with :meth:`LLMClient.budget`; a call outside any command gets a budget of its own), and raises
  :class:`~img_agent.errors.LLMTimeoutError` once that is spent;
- raises :class:`~img_agent.errors.LLMError` with an actionable message once retries are spent,
  or at once for errors a retry cannot fix (bad key, unknown model, refusal, empty answer).
  Callers catch ``LLMError`` and fall back to plain retrieval with a note.

Images travel as ``data:image/jpeg;base64,...`` content parts. When a server refuses them (HTTP
400/415/422 mentioning images, vision or the content type) the client remembers that and
:meth:`LLMClient.complete_with_images` retries the request as text only.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionMessage
else:  # imported on first use: ``img-agent serve`` and plain searches never pay for openai's import
    import importlib

    class _Lazy:
        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attr: str):
            return getattr(importlib.import_module(self._name), attr)

    openai = _Lazy("openai")

from img_agent.agent.deadline import (
    DeadlinePassed,
    LLMBudget,
    llm_budget,
    monotonic,
    run_with_deadline,
    shut_stream,
    trace_connections,
)
from img_agent.agent.failures import (
    describe_failure,
    error_text,
    exhausted_message,
    is_retryable_status,
    is_timeout,
    retry_after,
    status_message,
)
from img_agent.agent.messages import (  # noqa: F401 - the message helpers, re-exported
    LabeledImage,
    Message,
    count_images,
    jpeg_data_url,
    user_message,
)
from img_agent.config import LLMSettings
from img_agent.errors import LLMError, LLMTimeoutError

logger = logging.getLogger(__name__)

MAX_RETRY_WAIT = 8.0
"""Longest pause between two attempts, in seconds (also caps a server's ``Retry-After``)."""

INITIAL_RETRY_WAIT = 0.25
"""First backoff pause in seconds; doubled per retry, with jitter, up to :data:`MAX_RETRY_WAIT`."""

NO_KEY_PLACEHOLDER = "not-needed"
"""API key sent to servers configured with a base URL only (many local servers ignore the key)."""

_IMAGE_REFUSAL_STATUS = frozenset({400, 415, 422})
_IMAGE_REFUSAL_PATTERN = re.compile(
    r"image|vision|multi-?modal|content[ _-]?(?:part|type)|mime", re.IGNORECASE
)


class ImagesNotSupportedError(LLMError):
    """The server refused a request because it carried image content parts."""


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


class LLMClient:
    """An OpenAI-compatible chat model with timeouts, bounded retries and image fallback.

    Thread-safe: the underlying ``openai.OpenAI`` client is, and the only mutable state (whether
    the model accepts images) is a flag guarded by a lock.

    Args:
        settings: endpoint, key, model, timeout, retries, vision mode and prompt folder.
        client: an ``openai.OpenAI`` instance to use instead of building one (tests, proxies).
    """

    def __init__(self, settings: LLMSettings, *, client: openai.OpenAI | None = None) -> None:
        self.settings = settings
        self._client = client or openai.OpenAI(
            base_url=settings.base_url or None,
            api_key=settings.api_key or NO_KEY_PLACEHOLDER,
            timeout=settings.timeout,
            max_retries=0,  # our own loop below bounds the total time
            http_client=openai.DefaultHttpxClient(event_hooks={"request": [trace_connections]}),
        )
        self._lock = threading.Lock()
        self._vision: bool | None = {"yes": True, "no": False}.get(settings.vision)

    @classmethod
    def from_settings(cls, settings: LLMSettings | None) -> LLMClient | None:
        """Build a client, or return ``None`` when no LLM is configured (every LLM feature is then off)."""
        if settings is None or not settings.enabled:
            return None
        return cls(settings)

    # ------------------------------------------------------------------ properties

    @property
    def model(self) -> str:
        """The model name sent with every request."""
        return self.settings.model

    @property
    def endpoint(self) -> str:
        """The base URL requests go to (for messages)."""
        return str(self._client.base_url)

    @property
    def accepts_images(self) -> bool:
        """Whether to send images: false once the server refused them or when ``vision`` is ``no``."""
        with self._lock:
            return self._vision is not False

    @property
    def vision_known(self) -> bool | None:
        """``True``/``False`` once known (configured or learned), ``None`` while untried."""
        with self._lock:
            return self._vision

    @property
    def max_call_seconds(self) -> float:
        """Upper bound on the wall time of one :meth:`complete` call, all retries included.

        Each attempt ends by ``timeout`` however slowly the server sends, and the whole call by the
        command's ``deadline``.
        """
        retries = self.settings.max_retries
        return min((retries + 1) * self.settings.timeout + retries * MAX_RETRY_WAIT, self.settings.deadline)

    def budget(self) -> AbstractContextManager[LLMBudget]:
        """Open the budget of one command (``LLMSettings.deadline`` seconds of LLM work), or join the open one."""
        return llm_budget(self.settings.deadline)

    def _remember_vision(self, accepted: bool) -> None:
        with self._lock:
            if self._vision is None or not accepted:
                self._vision = accepted

    # ------------------------------------------------------------------ calls

    def complete(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> ChatCompletionMessage:
        """Send one chat completion request and return the assistant message.

        Retries timeouts, connection errors, 408/409/429 and 5xx up to ``max_retries`` times.

        Raises:
            ImagesNotSupportedError: the server refused image content parts (no retry).
            LLMError: any other failure once retries are spent, a refusal, or an empty answer.
        """
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if tools:
            kwargs["tools"] = list(tools)
            if tool_choice is not None:
                kwargs["tool_choice"] = tool_choice
        with self._charged() as budget:
            completion = self._create_with_retries(kwargs, has_images=count_images(messages) > 0, budget=budget)
        # The SDK does not validate responses: read the shape defensively.
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise LLMError(
                f"The LLM at {self.endpoint} returned no choices. Check that LLM_MODEL={self.model!r} "
                "is a chat model served there."
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        finish_reason = getattr(choice, "finish_reason", None)
        if not isinstance(message, openai.types.chat.ChatCompletionMessage):
            raise LLMError(f"The LLM at {self.endpoint} returned a choice without a usable message.")
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise LLMError(f"The LLM refused the request: {refusal}")
        if finish_reason == "content_filter":
            raise LLMError("The LLM's content filter blocked the answer; rephrase the request.")
        content = getattr(message, "content", None)
        if content is not None and not isinstance(content, str):
            raise LLMError(f"The LLM at {self.endpoint} returned non-text content.")
        if not (content and content.strip()) and not getattr(message, "tool_calls", None):
            raise LLMError(
                f"The LLM at {self.endpoint} returned an empty answer "
                f"(finish_reason={finish_reason!r}); try again or use another model."
            )
        return message

    def complete_text(self, messages: Sequence[Message]) -> str:
        """Like :meth:`complete` without tools; returns the answer text (stripped)."""
        message = self.complete(messages)
        text = (message.content or "").strip()
        if not text:
            raise LLMError(f"The LLM at {self.endpoint} answered with tool calls where text was expected.")
        return text

    def complete_with_images(
        self,
        system: str,
        build_user: Callable[[int], str],
        images: Sequence[LabeledImage] = (),
    ) -> tuple[str, int, list[str]]:
        """Ask with images when the model may accept them, else (or when refused) as text only.

        Args:
            system: the system prompt.
            build_user: returns the user prompt for the number of images actually attached
                (so the text can say whether thumbnails are shown).
            images: labelled JPEG thumbnails to attach (already limited in number and size by the caller).

        Returns:
            ``(answer text, images sent, notes)``; notes say when images were refused.

        Raises:
            LLMError: the text-only request failed too (after retries).
        """
        notes: list[str] = []
        if images and self.accepts_images:
            messages = [{"role": "system", "content": system}, user_message(build_user(len(images)), images)]
            try:
                text = self.complete_text(messages)
            except ImagesNotSupportedError as exc:
                logger.info("LLM %s refused images; falling back to text only: %s", self.model, exc)
                notes.append(f"The model refused images ({exc}); answered from file metadata only.")
            else:
                self._remember_vision(True)
                return text, len(images), notes
        messages = [{"role": "system", "content": system}, user_message(build_user(0))]
        return self.complete_text(messages), 0, notes

    # ------------------------------------------------------------------ retry loop

    @contextmanager
    def _charged(self) -> Iterator[LLMBudget]:
        """The command's budget, charged with the time spent inside the block."""
        with self.budget() as budget:
            started = monotonic()
            try:
                yield budget
            finally:
                budget.charge(monotonic() - started)

    def _attempt(self, kwargs: dict[str, Any], seconds: float) -> Any:
        """One request that ends within ``seconds`` in all (it is abandoned then: :class:`DeadlinePassed`)."""

        def work(on_abandon: Callable[[Callable[[], Any]], bool]) -> Any:
            create = self._client.chat.completions.with_streaming_response.create
            with create(**kwargs, timeout=seconds) as raw:  # headers read, body not yet
                response = raw.http_response
                if not on_abandon(lambda: shut_stream(response.extensions.get("network_stream"))):
                    return None
                return raw.parse()

        return run_with_deadline(work, seconds)

    def _create_with_retries(self, kwargs: dict[str, Any], *, has_images: bool, budget: LLMBudget) -> Any:
        attempts = self.settings.max_retries + 1
        stop_at = monotonic() + budget.remaining()
        last: BaseException | None = None
        cut_by_budget = False
        for attempt in range(attempts):
            left = stop_at - monotonic()
            if left <= 0:
                raise budget.exceeded(self.endpoint, describe_failure(last) if last else None) from last
            cut_by_budget = left < self.settings.timeout
            try:
                return self._attempt(kwargs, min(self.settings.timeout, left))
            except DeadlinePassed as exc:
                last = exc
                wait = None
            except openai.APIStatusError as exc:
                if has_images and exc.status_code in _IMAGE_REFUSAL_STATUS and _IMAGE_REFUSAL_PATTERN.search(
                    error_text(exc)
                ):
                    self._remember_vision(False)
                    raise ImagesNotSupportedError(
                        f"HTTP {exc.status_code}: {error_text(exc)[:200]}"
                    ) from exc
                if not is_retryable_status(exc.status_code):
                    raise LLMError(status_message(exc, self.endpoint, self.model)) from exc
                last = exc
                wait = retry_after(exc)
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                last = exc
                wait = None
            except (openai.OpenAIError, ValueError) as exc:  # malformed bodies (JSONDecodeError), SDK-level failures
                raise LLMError(f"The LLM at {self.endpoint} sent an unusable response: {exc}") from exc
            if attempt + 1 < attempts:
                pause = backoff_seconds(attempt, wait)
                if monotonic() + pause >= stop_at:  # no time left for another attempt
                    raise budget.exceeded(self.endpoint, describe_failure(last)) from last
                logger.warning(
                    "LLM request failed (%s); retry %d/%d in %.2f s",
                    describe_failure(last),
                    attempt + 1,
                    attempts - 1,
                    pause,
                )
                time.sleep(pause)
        timed_out = is_timeout(last)
        if timed_out and cut_by_budget:
            raise budget.exceeded(self.endpoint, describe_failure(last)) from last
        error = LLMTimeoutError if timed_out else LLMError
        raise error(exhausted_message(last, self.endpoint, self.settings.timeout, attempts)) from last


def backoff_seconds(attempt: int, server_wait: float | None) -> float:
    """Pause before retry ``attempt + 1``: the server's ``Retry-After`` if given, else jittered exponential backoff.

    Never more than :data:`MAX_RETRY_WAIT`, so a server asking for minutes cannot stall a caller.
    """
    if server_wait is not None:
        return min(server_wait, MAX_RETRY_WAIT)
    base = min(INITIAL_RETRY_WAIT * (2.0**attempt), MAX_RETRY_WAIT)
    return base * (1.0 - 0.25 * random.random())


def budget_of(llm: LLMClient | None) -> AbstractContextManager[LLMBudget | None]:
    """The command budget of ``llm`` (see :meth:`LLMClient.budget`), or nothing without an LLM."""
    return llm.budget() if llm is not None else nullcontext()
