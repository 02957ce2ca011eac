"""Query algebra in the engine: weighted text, image and indexed-image terms against an exact numpy oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

from img_agent.errors import ImageDecodeError, InvalidInputError, NotFoundError
from img_agent.index.engine import Engine
from img_agent.index.terms import Term, combine


@pytest.fixture
def engine(settings, image_dir):
    with Engine.open(settings) as eng:
        eng.add_paths([image_dir])
        yield eng


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def oracle(engine: Engine, query: np.ndarray, k: int, excluded: set[int] = frozenset()) -> tuple[list[int], np.ndarray]:
    """Exact top-k ids (ties to the smaller id) and their cosine scores over the stored vectors."""
    ids = np.arange(engine.live_count)
    x = engine.store.get(ids).astype(np.float64)
    scores = x @ unit(query)
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in excluded][:k]
    return order, scores[order]


def test_weighted_text_image_and_id_terms_match_the_exact_oracle(engine, image_dir):
    pool = min(image_dir.glob("*.png"))
    terms = [Term(text="a golden retriever", weight=2), Term(image=pool), Term(text="fruit", weight=-1),
             Term(image_id=3, weight=0.5)]
    hits = engine.search_terms(terms, k=6)

    t = engine.encode_text(["a golden retriever", "fruit"])
    q = 2 * unit(t[0]) + unit(engine.encode_image(pool)) - unit(t[1]) + 0.5 * unit(engine.store.get(np.array([3]))[0])
    want_ids, want_scores = oracle(engine, q, 6, excluded={3})
    assert [h.id for h in hits] == want_ids
    assert [h.score for h in hits] == pytest.approx(want_scores.tolist(), abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5, 6]


def test_image_bytes_term_equals_the_file_term(engine, image_dir):
    pool = sorted(image_dir.glob("*.jpg"))[2]
    by_file = engine.search_terms([Term(image=pool), Term(text="snow", weight=-0.5)], k=5)
    by_bytes = engine.search_terms([Term(image=pool.read_bytes()), Term(text="snow", weight=-0.5)], k=5)
    assert [(h.id, h.score) for h in by_file] == [(h.id, h.score) for h in by_bytes]


def test_a_single_unit_weight_text_term_is_the_text_search(engine):
    plain = engine.search_text("a red car", k=12)
    combined = engine.search_terms([Term(text="a red car", weight=3.5)], k=12)
    assert [h.id for h in combined] == [h.id for h in plain]
    assert [h.score for h in combined] == pytest.approx([h.score for h in plain], abs=1e-5)


def test_subtracting_an_image_pushes_it_down(engine):
    plain = engine.search_text("a photo of the sea", k=12)
    top = plain[0].id
    minus = engine.search_terms([Term(text="a photo of the sea"), Term(image_id=top, weight=-1)], k=12)
    ranks = {h.id: h.rank for h in minus}
    assert len(minus) == 12  # a subtracted image is not excluded, only ranked by the combined query
    assert ranks[top] > 1
    want_ids, _ = oracle(engine, unit(engine.encode_text(["a photo of the sea"])[0])
                         - unit(engine.store.get(np.array([top]))[0]), 12)
    assert [h.id for h in minus] == want_ids


def test_a_positive_image_id_term_excludes_that_image(engine):
    hits = engine.search_terms([Term(image_id=5), Term(text="a tree", weight=0.25)], k=12)
    assert len(hits) == 11 and 5 not in [h.id for h in hits]
    # exclude_ids also leave images out, and k hits still come back while k others exist
    more = engine.search_terms([Term(image_id=5)], k=9, exclude_ids=[0, 1])
    assert len(more) == 9 and not {0, 1, 5} & {h.id for h in more}
    assert [h.id for h in more] == oracle(engine, engine.store.get(np.array([5]))[0], 9, {0, 1, 5})[0]
    similar = engine.search_similar(5, k=11)
    alone = engine.search_terms([Term(image_id=5)], k=11)
    assert [h.id for h in alone] == [h.id for h in similar]


def test_cancelling_terms_are_refused(engine):
    with pytest.raises(InvalidInputError, match="cancel out"):
        engine.search_terms([Term(text="a dog"), Term(text="a dog", weight=-1)])
    with pytest.raises(InvalidInputError, match="cancel out"):
        engine.search_terms([Term(image_id=2, weight=2), Term(image_id=2, weight=-2)])
    # each term counts by its unit vector: a longer row does not outweigh a shorter one
    with pytest.raises(InvalidInputError, match="cancel out"):
        combine(np.array([[1.0, 0.0], [3.0, 0.0]]), [1, -1])
    assert combine(np.array([[1.0, 0.0], [0.0, 5.0]]), [3, -4]) == pytest.approx([0.6, -0.8])


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of text, image or image_id"),
    ({"text": "a dog", "image_id": 1}, "got text, image_id"),
    ({"text": "  "}, "text term is empty"),
    ({"text": "a dog", "weight": 0}, "non-zero"),
    ({"text": "a dog", "weight": 100.5}, "from -100 to 100"),
    ({"text": "a dog", "weight": -101}, "from -100 to 100"),
    ({"text": "a dog", "weight": math.nan}, "non-zero number"),
    ({"text": "a dog", "weight": math.inf}, "non-zero number"),
    ({"text": "a dog", "weight": True}, "must be a number"),
    ({"image_id": "3"}, "integer id"),
])
def test_bad_terms_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        Term(**kwargs)


def test_unknown_ids_and_bad_images_name_the_problem(engine, tmp_path):
    with pytest.raises(NotFoundError, match="No live image has id 99"):
        engine.search_terms([Term(text="a dog"), Term(image_id=99)])
    engine.remove(ids=[4])
    with pytest.raises(NotFoundError, match="No live image has id 4"):
        engine.search_terms([Term(image_id=4)])
    with pytest.raises(ImageDecodeError, match="Term 2 cannot be used as a query image"):
        engine.search_terms([Term(text="a dog"), Term(image=b"not an image")])
    with pytest.raises(NotFoundError, match="No image file"):
        engine.search_terms([Term(image=tmp_path / "missing.jpg")])
    with pytest.raises(InvalidInputError, match="at least one query term"):
        engine.search_terms([])
    with pytest.raises(InvalidInputError, match="k must be"):
        engine.search_terms([Term(text="a dog")], k=0)


def test_an_empty_store_returns_nothing(settings):
    with Engine.open(settings) as eng:
        assert eng.search_terms([Term(text="a dog"), Term(text="a cat", weight=-0.5)]) == []
