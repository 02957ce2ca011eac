"""Chat messages in the OpenAI wire shape: text, and text followed by labelled JPEG images."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

Message = dict[str, Any]
"""One chat message in the OpenAI wire shape (``{"role": ..., "content": ...}``)."""


def jpeg_data_url(data: bytes) -> str:
    """Return ``data`` (JPEG bytes) as a ``data:image/jpeg;base64,...`` URL."""
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


LabeledImage = tuple[str, bytes]
"""``(label, JPEG bytes)``; the label (e.g. ``"[2] /photos/cat.jpg"``) is sent as a text part before the image."""


def user_message(text: str, images: Sequence[LabeledImage] = (), *, detail: str = "low") -> Message:
    """Build a user message: plain text, or text followed by labelled JPEG image parts."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for label, data in images:
        parts.append({"type": "text", "text": label})
        parts.append({"type": "image_url", "image_url": {"url": jpeg_data_url(data), "detail": detail}})
    return {"role": "user", "content": parts}


def count_images(messages: Sequence[Message]) -> int:
    """Number of image content parts in ``messages``."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            total += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    return total
