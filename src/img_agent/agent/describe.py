"""Descriptions of images written by a multimodal model, one image per request.

The model sees the image's thumbnail and its file name (as a quoted string: data, never an
instruction). Its answer is untrusted text: whitespace is collapsed to single spaces, every unsafe
character is written as a visible escape (:func:`~img_agent.textsafe.one_line`) and the text is
cut to the length the caller keeps.
"""

from __future__ import annotations

from img_agent.agent.llm import ImagesNotSupportedError, LLMClient, user_message
from img_agent.agent.prompts import render_prompt
from img_agent.errors import LLMError
from img_agent.textsafe import one_line, quoted

DESCRIBE_THUMB_SIDE = 512
"""Longest side of the thumbnail the model is shown."""


class VisionRequiredError(LLMError):
    """The configured model does not take images, so it cannot describe them."""


def vision_required(llm: LLMClient, reason: str) -> VisionRequiredError:
    return VisionRequiredError(
        f"The LLM {llm.model} {reason}, so it cannot describe images. Set LLM_MODEL (or --llm-model) to a "
        "multimodal model and LLM_VISION to auto or yes."
    )


def clean_description(text: str, max_chars: int) -> str:
    """The model's ``text`` on one line, unsafe characters escaped, at most ``max_chars`` characters."""
    flat = one_line(" ".join(text.split()))
    if len(flat) <= max_chars:
        return flat
    cut = flat[: max_chars - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + "\u2026"


def describe_image(llm: LLMClient, thumbnail: bytes, name: str, *, max_chars: int) -> str:
    """A description of the image whose JPEG ``thumbnail`` is given (``name``: its file name).

    Each call has a deadline of its own (``LLMSettings.deadline``), so a long batch is never cut
    short by one command budget.

    Raises:
        VisionRequiredError: the model does not take images (configured so, or it refused them).
        LLMError: the request failed after retries, or the answer is empty.
    """
    if not llm.accepts_images:
        raise vision_required(llm, "is configured not to receive images (LLM_VISION=no)")
    prompts_dir = llm.settings.prompts_dir
    messages = [
        {"role": "system", "content": render_prompt("describe_system", prompts_dir)},
        user_message(render_prompt("describe_user", prompts_dir, name=quoted(name)), [(f"[1] {quoted(name)}", thumbnail)]),
    ]
    with llm.budget():
        try:
            answer = llm.complete_text(messages)
        except ImagesNotSupportedError as exc:
            raise vision_required(llm, f"refused the image ({exc})") from exc
    text = clean_description(answer, max_chars)
    if not text:
        raise LLMError(f"The LLM {llm.model} gave an empty description.")
    return text
