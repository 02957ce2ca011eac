"""The search_combined tool over a real engine: the exact oracle, confinement, readable query, bad terms."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.index.engine import Engine
from img_agent.testing import make_images
from img_agent.tools import ImageTools, dispatch, get_spec
from img_agent.tools.openai_tools import strict_parameters
from img_agent.tools.query_tools import render_query
from img_agent.tools.sandbox import Sandbox


@pytest.fixture
def engine(settings: Settings, image_dir: Path):
    with Engine.open(settings) as eng:
        eng.add_paths([image_dir])
        yield eng


@pytest.fixture
def tools(engine: Engine, image_dir: Path) -> ImageTools:
    return ImageTools(engine, Sandbox([image_dir], max_file_bytes=engine.settings.max_file_bytes))


def call(tools: ImageTools, **arguments: object) -> dict:
    return json.loads(dispatch(tools, "search_combined", json.dumps(arguments)))


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    return v / np.linalg.norm(v)


def test_weighted_terms_match_the_exact_oracle_and_read_well(tools, engine, image_dir):
    pool = sorted(image_dir.glob("*.jpg"))[1]
    result = call(tools, k=5, terms=[
        {"text": "golden  retriever", "weight": 2}, {"path": str(pool)}, {"text": "fruit", "weight": -1},
        {"image_id": 7, "weight": None},
    ])
    assert result["query"] == f'2×"golden retriever" + image {pool.resolve()} − "fruit" + image id 7'
    assert result["queries"] == ["golden retriever", "fruit"]

    t = engine.encode_text(["golden retriever", "fruit"])
    q = unit(2 * unit(t[0]) + unit(engine.encode_image(pool)) - unit(t[1]) + unit(engine.store.get(np.array([7]))))
    scores = engine.store.get(np.arange(12)).astype(np.float64) @ q
    want = [int(i) for i in np.argsort(-scores, kind="stable") if i != 7][:5]
    assert [h["id"] for h in result["hits"]] == want
    assert [h["score"] for h in result["hits"]] == pytest.approx(scores[want].tolist(), abs=1e-5)
    assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4, 5]


def test_inline_image_equals_the_file_and_negative_weights_push_down(tools, image_dir):
    pool = min(image_dir.glob("*.png"))
    inline = base64.b64encode(pool.read_bytes()).decode()
    by_path = call(tools, k=12, terms=[{"path": str(pool), "weight": 0.5}, {"text": "a dog"}])
    by_data = call(tools, k=12, terms=[{"image_base64": inline, "weight": 0.5}, {"text": "a dog"}])
    assert [h["id"] for h in by_data["hits"]] == [h["id"] for h in by_path["hits"]]
    assert by_data["query"].startswith("0.5×inline image (")

    plain = call(tools, k=12, terms=[{"text": "a dog"}])
    top = plain["hits"][0]["id"]
    minus = call(tools, k=12, terms=[{"text": "a dog"}, {"image_id": top, "weight": -1}])
    assert minus["query"] == f'"a dog" − image id {top}'
    assert {h["id"]: h["rank"] for h in minus["hits"]}[top] > 1
    # a positive id term leaves that image out
    like = call(tools, k=12, terms=[{"image_id": top}])
    assert len(like["hits"]) == 11 and top not in [h["id"] for h in like["hits"]]


def test_where_restricts_the_combined_search(tools, engine, image_dir, tmp_path):
    terms = [{"text": "a red square"}, {"text": "a blue circle", "weight": -0.5}]
    result = call(tools, k=3, terms=terms, where={"glob": "*.png"})
    t = engine.encode_text(["a red square", "a blue circle"])
    q = unit(unit(t[0]) - 0.5 * unit(t[1]))
    pngs = [r.id for r in engine.get(list(range(12))) if r.path.endswith(".png")]
    scores = engine.store.get(np.array(pngs)).astype(np.float64) @ q
    assert [h["id"] for h in result["hits"]] == [pngs[i] for i in np.argsort(-scores, kind="stable")[:3]]
    refused = call(tools, terms=terms, where={"folder": str(tmp_path)})
    assert "allowed folders" in refused["error"]
    schema = strict_parameters(get_spec("search_combined").arguments_model())
    assert schema["properties"]["where"]["anyOf"][0]["type"] == "object"


def test_files_are_confined_and_images_checked(tools, tmp_path):
    outside = make_images(tmp_path / "elsewhere", 1)[0]
    refused = call(tools, terms=[{"text": "a dog"}, {"path": str(outside)}])
    assert refused["error"].startswith("Term 2: ") and "allowed folders" in refused["error"]
    junk = base64.b64encode(b"not an image at all").decode()
    bad = call(tools, terms=[{"image_base64": junk}])
    assert "Term 1 cannot be used as a query image" in bad["error"]
    url = call(tools, terms=[{"path": "https://example.com/x.jpg"}])
    assert url["error"].startswith("Term 1: ")


@pytest.mark.parametrize("terms, message", [
    ([], "at least 1 item"),
    ([{"text": "x"}] * 11, "at most 10 items"),
    ([{"text": "a dog", "image_id": 1}], "exactly one of text, path, image_base64 or image_id (got text, image_id)"),
    ([{"weight": 2}], "(none was given)"),
    ([{"text": "a dog", "weight": 0}], "weight cannot be 0"),
    ([{"text": "a dog", "weight": 101}], "less than or equal to 100"),
    ([{"text": "a dog", "colour": "red"}], "'terms.0.colour'"),
    ([{"image_id": -1}], "greater than or equal to 0"),
    ([{"text": "a dog"}, {"text": "a  dog", "weight": -1}], "The terms cancel out"),
    ([{"text": "a dog"}, {"image_id": 999}], "No live image has id 999"),
])
def test_bad_terms_are_explained(tools, terms, message):
    assert message in call(tools, terms=terms)["error"]


def test_an_empty_index_says_what_to_do(settings, tmp_path):
    with Engine.open(settings) as engine:
        tools = ImageTools(engine, Sandbox([tmp_path], max_file_bytes=engine.settings.max_file_bytes))
        assert "add_images" in call(tools, terms=[{"text": "a dog"}])["error"]


def test_render_query():
    assert render_query(['"a"', "image id 3", '"b"'], [-1.5, 1, -1]) == '−1.5×"a" + image id 3 − "b"'
