"""Query algebra: one search from weighted positive and negative terms.

Each term is a text (text tower), an image given as encoded bytes or a file path (image tower) or
the id of an indexed image (its stored vector). The query is

    q = normalise( sum_i  w_i * u_i )

where ``u_i`` is term i's unit vector and ``w_i`` its weight: ``2 × "golden retriever" + pool.jpg −
"fruit"`` is ``2·u(golden retriever) + 1·u(pool.jpg) − 1·u(fruit)``, scaled to unit length. Scores
are cosine similarities to ``q``. A weight is finite, non-zero and at most :data:`MAX_TERM_WEIGHT`
in size. Terms that sum to (almost) nothing are refused: they have no direction to search in.

An indexed image named by a term with a positive weight is left out of the results (it would
otherwise rank first: "more like this" never returns the image itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from img_agent.errors import ImageDecodeError, InvalidInputError, NotFoundError
from img_agent.index.collapse import ranked_hits
from img_agent.index.search import Searcher, normalise
from img_agent.index.state import State
from img_agent.results import MAX_TERM_WEIGHT, SearchFilter, SearchHit

"""The largest weight, in size, a term may have."""

CANCEL_TOLERANCE = 1e-4
"""A weighted sum shorter than this fraction of the summed weights' sizes counts as cancelled out."""


def check_weight(weight: object, where: str = "weight") -> float:
    """``weight`` as a float.

    Raises:
        InvalidInputError: not a number, not finite, zero, or larger than :data:`MAX_TERM_WEIGHT` in size.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{where} must be a number; got {weight!r}.")
    value = float(weight)
    if not math.isfinite(value) or value == 0 or abs(value) > MAX_TERM_WEIGHT:
        raise InvalidInputError(
            f"{where} must be a non-zero number from -{MAX_TERM_WEIGHT:g} to {MAX_TERM_WEIGHT:g} (negative "
            f"subtracts the term); got {weight!r}."
        )
    return value


@dataclass(frozen=True)
class Term:
    """One term of a combined query: exactly one of ``text``, ``image`` (encoded bytes or a file path) or
    ``image_id``, and its ``weight`` (negative subtracts the term)."""

    text: str | None = None
    image: bytes | Path | str | None = None
    image_id: int | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        given = [name for name in ("text", "image", "image_id") if getattr(self, name) is not None]
        if len(given) != 1:
            detail = "none was given" if not given else f"got {', '.join(given)}"
            raise InvalidInputError(f"A query term needs exactly one of text, image or image_id ({detail}).")
        if self.text is not None and (not isinstance(self.text, str) or not self.text.strip()):
            raise InvalidInputError("A text term is empty; describe what the images should (or should not) show.")
        image_id = self.image_id
        if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer))):
            raise InvalidInputError(f"image_id must be an integer id from search results; got {image_id!r}.")
        object.__setattr__(self, "weight", check_weight(self.weight))

    @property
    def kind(self) -> str:
        """``"text"``, ``"image"`` or ``"image_id"``."""
        return "text" if self.text is not None else "image" if self.image is not None else "image_id"


def combine(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The unit vector of the weighted sum of the unit rows of ``vectors`` (float32, 1-d).

    Raises:
        InvalidInputError: the terms cancel out (their weighted sum has no direction), or a row is unusable.
    """
    units = normalise(np.asarray(vectors, dtype=np.float64), "a term's vector").astype(np.float64)
    w = np.asarray([check_weight(x) for x in weights], dtype=np.float64)
    if units.shape[0] != len(w) or len(w) == 0:
        raise InvalidInputError(f"Give one weight per term; got {units.shape[0]} vectors and {len(w)} weights.")
    total = w @ units
    if np.linalg.norm(total) <= CANCEL_TOLERANCE * float(np.abs(w).sum()):
        raise InvalidInputError(
            "The terms cancel out: their weighted sum is (almost) zero, so there is no direction to search in. "
            "Change a weight or drop one of the opposing terms."
        )
    return normalise(total[None, :], "the combined query")[0]


def term_vectors(
    terms: Sequence[Term],
    *,
    encode_text: Callable[[Sequence[str]], np.ndarray],
    encode_image: Callable[[Path | str | bytes], np.ndarray],
    stored: Callable[[int], np.ndarray],
) -> np.ndarray:
    """One row per term (in order): texts encoded in one batch, images one at a time, ids from the store.

    Raises:
        ImageDecodeError: naming the term whose image cannot be used.
        NotFoundError: an image id that is not live.
    """
    rows: list[np.ndarray | None] = [None] * len(terms)
    texts = [(i, t.text) for i, t in enumerate(terms) if t.text is not None]
    if texts:
        encoded = encode_text([text for _, text in texts])
        for (i, _), vec in zip(texts, encoded):
            rows[i] = np.asarray(vec)
    for i, t in enumerate(terms):
        if t.image is not None:
            try:
                rows[i] = np.asarray(encode_image(t.image))
            except ImageDecodeError as exc:
                reason = str(exc).rstrip(". ")
                raise ImageDecodeError(f"Term {i + 1} cannot be used as a query image ({reason}).") from exc
        elif t.image_id is not None:
            rows[i] = stored(int(t.image_id))
    return np.stack([np.asarray(r, dtype=np.float32).reshape(-1) for r in rows if r is not None])


def stored_vector(state: State, image_id: int) -> np.ndarray:
    """The stored vector of live image ``image_id``.

    Raises:
        NotFoundError: no live image has that id.
    """
    live = state.view.live
    if not (0 <= image_id < len(live)) or not live[image_id]:
        raise NotFoundError(f"No live image has id {image_id}. Use an id from search results.")
    return state.vectors.get(np.array([image_id]))[0]


def search_terms(
    state: State,
    searcher: Searcher,
    terms: Sequence[Term],
    k: int,
    filter: SearchFilter | None,
    exclude_ids: Collection[int],
    *,
    collapse: bool | float = False,
    encode_text: Callable[[Sequence[str]], np.ndarray],
    encode_image: Callable[[Path | str | bytes], np.ndarray],
) -> list[SearchHit]:
    """The top-k hits for the combined query of ``terms`` (see the module's description), best first.

    The images of positive ``image_id`` terms and ``exclude_ids`` are left out; k hits still come back
    whenever k other images are allowed.
    """
    if not terms:
        raise InvalidInputError("Give at least one query term.")
    vectors = term_vectors(terms, encode_text=encode_text, encode_image=encode_image,
                           stored=lambda image_id: stored_vector(state, image_id))
    query = combine(vectors, [t.weight for t in terms])
    if state.view.n_live == 0:
        return []
    excluded = {int(i) for i in exclude_ids}
    excluded.update(int(t.image_id) for t in terms if t.image_id is not None and t.weight > 0)
    live = state.view.live
    excluded_live = sorted(i for i in excluded if 0 <= i < len(live) and live[i])
    return ranked_hits(state, searcher, query[None, :], k, filter, collapse, exclude=excluded_live or None)
