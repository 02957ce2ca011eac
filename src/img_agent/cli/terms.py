"""The terms of ``img-agent search``: weights, and text or image file, as ``search_combined`` takes them.

- A term may start with a weight: a number followed by ``:``, e.g. ``2:golden retriever``,
  ``0.5:./pool.jpg``, ``-1:fruit``. Only a leading number (digits, an optional sign, decimal point and
  exponent) followed by ``:`` is a weight: ``http://example.com``, ``a:b`` or ``12h:30`` are plain text.
  An item that as a whole names an existing file is that file, weight 1, even when it starts with ``2:``.
- A term given with ``--add`` or ``--subtract`` that names an existing file (after its weight) is an
  image; anything else is text. ``--subtract`` negates the weight.
- The positional TEXT is always text (its weight prefix is read); ``--image PATH`` is always an image,
  ``--similar ID`` an indexed image, both weight 1.

Plain searches stay plain: one unweighted TEXT, or ``--image`` or ``--similar`` alone, is no algebra.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from img_agent.errors import InvalidInputError

_WEIGHT = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*:(.*)\Z", re.DOTALL)


def split_weight(item: str) -> tuple[float | None, str]:
    """(weight, rest) when ``item`` starts with a number and ':', else (None, item).

    Raises:
        InvalidInputError: a weight with nothing after it (``"2:"``).
    """
    match = _WEIGHT.match(item)
    if match is None:
        return None, item
    rest = match.group(2).strip()
    if not rest:
        raise InvalidInputError(f"{item!r} has a weight but no term after the ':'; write e.g. '2:a golden retriever'.")
    return float(match.group(1)), rest


def _is_file(item: str) -> bool:
    try:
        return Path(item).expanduser().is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL
        return False


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute())


def term(item: str, *, sign: float = 1.0, images: bool = True) -> dict[str, Any]:
    """The ``search_combined`` term of one item; with ``images``, an item naming an existing file is that image."""
    if images and _is_file(item):
        return {"path": _absolute(item), "weight": sign}
    weight, rest = split_weight(item)
    weight = sign * (1.0 if weight is None else weight)
    if images and _is_file(rest):
        return {"path": _absolute(rest), "weight": weight}
    return {"text": rest, "weight": weight}


def search_terms(text: str | None, image: str | None = None, similar: int | None = None,
                 add: list[str] | None = None, subtract: list[str] | None = None) -> list[dict[str, Any]] | None:
    """The terms of a search's options, or None when they ask for no algebra (one plain TEXT, ``--image``
    or ``--similar`` alone, or nothing at all)."""
    add, subtract = add or [], subtract or []
    weighted = text is not None and split_weight(text)[0] is not None
    plain = sum(x is not None for x in (text, image, similar))
    if not add and not subtract and not weighted and plain <= 1:
        return None
    terms: list[dict[str, Any]] = []
    if text is not None:
        terms.append(term(text, images=False))
    if image is not None:
        terms.append({"path": _absolute(image), "weight": 1.0})
    if similar is not None:
        terms.append({"image_id": similar, "weight": 1.0})
    terms += [term(item) for item in add]
    terms += [term(item, sign=-1.0) for item in subtract]
    return terms
