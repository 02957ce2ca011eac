"""The OpenAI dispatcher over the fake engine: validation, error texts, every tool round-tripped."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from img_agent.errors import InvalidInputError
from img_agent.tools import TOOL_SPECS, ImageTools, dispatch, get_spec
from img_agent.tools.image_tools import EMPTY_INDEX_MESSAGE
from img_agent.tools.sandbox import Sandbox
from img_agent.tools.spec import error_message


def call(tools: ImageTools, name: str, **arguments) -> dict:
    return json.loads(dispatch(tools, name, json.dumps(arguments)))


def error_of(tools: ImageTools, name: str, arguments: str) -> str:
    result = json.loads(dispatch(tools, name, arguments))
    assert set(result) == {"error"}, result
    return result["error"]


# ------------------------------------------------------------------------------ validation


def test_unknown_tool_lists_the_tools(tools: ImageTools) -> None:
    message = error_of(tools, "search_by_colour", "{}")
    assert "Unknown tool 'search_by_colour'" in message and "search_by_text" in message


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("{}", "'query' is required"),
        ('{"query": "cat", "k": 0}', "'k': Input should be greater than or equal to 1 (got 0)"),
        ('{"query": "cat", "k": 5000}', "'k': Input should be less than or equal to 1000 (got 5000)"),
        ('{"query": "cat", "k": "many"}', "'k': Input should be a valid integer"),
        ('{"query": "cat", "colour": "red"}', "'colour' is not a parameter of search_by_text"),
        ('{"query": "cat", "thumbnails": 2}', "'thumbnails' is not a parameter"),  # MCP-only option
        ('{"query": "' + "x" * 1001 + '"}', "at most 1000 characters"),
    ],
)
def test_validation_errors_are_actionable(tools: ImageTools, arguments: str, expected: str) -> None:
    message = error_of(tools, "search_by_text", arguments)
    assert message.startswith("Invalid arguments for search_by_text")
    assert expected in message
    assert "Parameters: query (required), k, where, collapse_duplicates, expand." in message or "JSON" in message


def test_long_inputs_are_cut_in_messages(tools: ImageTools) -> None:
    message = error_of(tools, "search_by_image", json.dumps({"image_id": "x" * 10_000}))
    assert len(message) < 600


def test_null_means_default_and_json_strings_are_forgiven(indexed_tools: ImageTools) -> None:
    plain = call(indexed_tools, "search_by_text", query="cat", k=None, where=None, expand=None)
    assert len(plain["hits"]) == 12  # fake index holds 12; default k (20) applies
    spec = get_spec("remove_images")
    assert spec.parse({"ids": "[1, 2]", "paths": None}) == {"ids": [1, 2], "paths": None, "dry_run": False}
    with pytest.raises(InvalidInputError, match=r"'query': Input should be a valid string \(got null\)"):
        get_spec("search_by_text").parse({"query": None})


# ------------------------------------------------------------------------------ every tool


def test_every_tool_round_trips(indexed_tools: ImageTools, image_dir: Path) -> None:
    first = image_dir / "img_0000.jpg"
    results = {
        "search_by_text": call(indexed_tools, "search_by_text", query="a colourful pattern", k=3),
        "search_by_image": call(indexed_tools, "search_by_image", path=str(first), k=2),
        "ask_about_images": call(indexed_tools, "ask_about_images", question="Which images are blue?", k=2),
        "index_status": call(indexed_tools, "index_status"),
        "merge_buffer": call(indexed_tools, "merge_buffer"),
        "rebuild_index": call(indexed_tools, "rebuild_index", index_string=None),
        "remove_images": call(indexed_tools, "remove_images", ids=[0]),
        "add_images": call(indexed_tools, "add_images", paths=[str(first)]),
    }
    results["cancel_job"] = call(indexed_tools, "cancel_job", job_id=indexed_tools.jobs.list()[-1].id)
    assert set(results) | set(NEEDS_A_REAL_ENGINE) == {spec.name for spec in TOOL_SPECS}
    for name, result in results.items():
        assert "error" not in result, (name, result)
        get_spec(name).result_type.model_validate(result)  # the JSON is the declared result model

    hits = results["search_by_text"]["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert {"id", "path", "score", "rank", "width", "height", "format", "tags", "sha256"} <= set(hits[0])
    assert results["search_by_image"]["query"] == f"image file {first}"
    answer = results["ask_about_images"]
    assert answer["answer"] is None and answer["llm_used"] is False
    assert "No LLM configured" in " ".join(answer["notes"])
    assert [s["rank"] for s in answer["sources"]] == [1, 2] and answer["sources"][0]["path"]
    assert results["remove_images"]["removed"] == [0]
    assert results["add_images"]["added"] == [12]  # re-added after removal: a new id
    assert results["cancel_job"]["state"] == "done"  # cancelling a finished job changes nothing


NEEDS_A_REAL_ENGINE = ("search_combined", "sync_paths", "find_duplicates", "tag_images", "set_description", "list_tags",
                       "describe_images")
"""Tools that work on stored vectors or notes, which the fake engine does not keep."""


def test_the_vector_and_note_tools_round_trip_on_a_real_engine(settings, image_dir: Path) -> None:
    from img_agent.index.engine import Engine

    with Engine.open(settings) as engine:
        tools = ImageTools(engine, Sandbox([image_dir], max_file_bytes=settings.max_file_bytes))
        tools.add_images([str(image_dir)])
        first = image_dir / "img_0000.jpg"
        results = {
            "search_combined": call(tools, "search_combined", terms=[{"text": "blue", "weight": 2},
                                                                     {"image_id": 2, "weight": 1}], k=2),
            "sync_paths": call(tools, "sync_paths", paths=[str(first)]),
            "find_duplicates": call(tools, "find_duplicates"),
            "tag_images": call(tools, "tag_images", ids=[1], add=["beach"]),
            "set_description": call(tools, "set_description", ids=[1], description="a test pattern"),
            "list_tags": call(tools, "list_tags"),
        }
        no_llm = error_of(tools, "describe_images", json.dumps({"ids": [1]}))
    assert set(results) | {"describe_images"} == set(NEEDS_A_REAL_ENGINE)
    for name, result in results.items():
        assert "error" not in result, (name, result)
        get_spec(name).result_type.model_validate(result)
    assert "LLM_BASE_URL" in no_llm  # says how to configure one
    assert len(results["search_combined"]["hits"]) == 2 and 2 not in [h["id"] for h in results["search_combined"]["hits"]]
    assert [(t["tag"], t["count"]) for t in results["list_tags"]["tags"]] == [("beach", 1)]


def test_search_by_image_inputs(indexed_tools: ImageTools, image_dir: Path) -> None:
    data = base64.b64encode((image_dir / "img_0001.jpg").read_bytes()).decode()
    inline = call(indexed_tools, "search_by_image", image_base64=data, k=1)
    assert inline["query"].startswith("inline image (") and len(inline["hits"]) == 1
    similar = call(indexed_tools, "search_by_image", image_id=3, k=20)
    assert 3 not in [h["id"] for h in similar["hits"]] and len(similar["hits"]) == 11
    relative = call(indexed_tools, "search_by_image", path="sub/img_0003.jpg", k=1)
    assert relative["query"] == f"image file {image_dir / 'sub' / 'img_0003.jpg'}"

    both = error_of(indexed_tools, "search_by_image", json.dumps({"path": "img_0000.jpg", "image_id": 1}))
    assert both == "Give exactly one of path, image_base64 or image_id (got path, image_id)."
    assert "none was given" in error_of(indexed_tools, "search_by_image", "{}")
    assert "No live image has id 999" in error_of(indexed_tools, "search_by_image", '{"image_id": 999}')
    bad = base64.b64encode(b"definitely not an image").decode()
    assert error_of(indexed_tools, "search_by_image", json.dumps({"image_base64": bad})).startswith(
        "image_base64 cannot be used as a query image (not an image (unrecognised format))"
    )


def test_file_access_errors(tools: ImageTools, image_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes((image_dir / "img_0000.jpg").read_bytes())
    refused = error_of(tools, "search_by_image", json.dumps({"path": str(outside)}))
    assert "outside the allowed folders" in refused and str(image_dir) in refused
    escape = error_of(tools, "add_images", json.dumps({"paths": [str(image_dir / ".." / "elsewhere.jpg")]}))
    assert "outside the allowed folders" in escape
    missing = error_of(tools, "add_images", json.dumps({"paths": [str(image_dir / "nope")]}))
    assert "No file or folder" in missing
    several = error_of(tools, "add_images", json.dumps({"paths": [str(outside), "nope.jpg"]}))
    assert several.startswith("None of the paths can be added:")


def test_add_images_degrades_per_item(tools: ImageTools, image_dir: Path, tmp_path: Path) -> None:
    (image_dir / "broken.jpg").write_bytes(b"not a jpeg")
    report = call(tools, "add_images", paths=[str(image_dir), str(tmp_path / "outside"), "img_0000.jpg"])
    assert len(report["added"]) == 12 and report["unchanged"] == 0  # img_0000.jpg counted once
    assert call(tools, "add_images", paths=["img_0000.jpg"])["unchanged"] == 1
    reasons = {Path(item["path"]).name: item["reason"] for item in report["skipped"]}
    assert "not an image" in reasons["broken.jpg"]
    assert "outside the allowed folders" in reasons["outside"]


def test_add_images_follows_no_link_out_of_the_allowed_folders(tools: ImageTools, image_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes((image_dir / "img_0000.jpg").read_bytes())
    (image_dir / "link.jpg").symlink_to(outside / "secret.jpg")
    (image_dir / "linked").symlink_to(outside)
    report = call(tools, "add_images", paths=[str(image_dir)])
    assert len(report["added"]) == 12
    reasons = {Path(item["path"]).name: item["reason"] for item in report["skipped"]}
    assert set(reasons) == {"link.jpg", "linked"}
    assert all("outside the allowed folders" in reason and str(outside) not in reason for reason in reasons.values())


def test_empty_index_is_an_actionable_error(tools: ImageTools) -> None:
    assert error_of(tools, "search_by_text", '{"query": "cat"}') == EMPTY_INDEX_MESSAGE
    assert error_of(tools, "ask_about_images", '{"question": "any cats?"}') == EMPTY_INDEX_MESSAGE


def test_filter_that_matches_nothing_gets_a_note(indexed_tools: ImageTools) -> None:
    result = call(indexed_tools, "search_by_text", query="cat", where={"glob": "*/nothing/*"})
    assert result["hits"] == [] and "loosen or drop them" in result["notes"][0]
    sub = call(indexed_tools, "search_by_text", query="cat", where={"glob": "*/SUB/*"})
    assert len(sub["hits"]) == 3 and all("/sub/" in h["path"] for h in sub["hits"])
    relative = call(indexed_tools, "search_by_text", query="cat", where={"folder": "sub"})
    assert sorted(h["id"] for h in relative["hits"]) == sorted(h["id"] for h in sub["hits"])


def test_remove_and_maintenance_errors(indexed_tools: ImageTools, fake_engine) -> None:
    assert error_of(indexed_tools, "remove_images", "{}") == "Give the ids and/or paths of the images to remove."
    assert "No live image matched 4242" in error_of(indexed_tools, "remove_images", '{"ids": [4242]}')
    assert "Unknown index string" in error_of(indexed_tools, "rebuild_index", '{"index_string": "bogus"}')
    fake_engine.busy = True
    assert "already running" in error_of(indexed_tools, "merge_buffer", "{}")


def test_unexpected_errors_are_logged_not_leaked(tools: ImageTools, fake_engine, monkeypatch, caplog) -> None:
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(fake_engine, "status", boom)
    message = error_of(tools, "index_status", "{}")
    assert message.startswith("index_status failed with an unexpected internal error (RuntimeError)")
    assert "secret" not in message
    assert "secret internal detail" in caplog.text  # the traceback went to the log


def test_expand_without_llm_notes_it(indexed_tools: ImageTools) -> None:
    result = call(indexed_tools, "search_by_text", query="a dog on a beach", k=2, expand=True)
    assert len(result["hits"]) == 2 and result["queries"] == ["a dog on a beach"]
    assert any("No LLM configured" in note for note in result["notes"])
    assert result["hits"][0]["matched_queries"] == ["a dog on a beach"]


def test_error_message_falls_back_to_the_class_doc() -> None:
    assert error_message("t", InvalidInputError()) == "A caller passed a value the operation cannot use."


def test_llm_results_are_mapped(indexed_tools: ImageTools, monkeypatch) -> None:
    """With an LLM, the agent layer's results become the tool results (agent calls stubbed here)."""
    from img_agent.agent import qa, rag
    from img_agent.agent.fuse import FusedHit

    engine = indexed_tools.engine
    records = engine.get([4, 7])

    def fake_answer(engine_arg, llm, question, k, *, filter=None, **_):
        assert engine_arg is indexed_tools.images and engine_arg.engine is engine  # thumbnails confined
        assert llm == "llm" and k == 2 and filter is None
        sources = [
            qa.QASource(label=1, id=4, path=records[0].path, score=0.31, thumbnail_sent=True, cited=False),
            qa.QASource(label=2, id=7, path=records[1].path, score=0.29, thumbnail_sent=True, cited=True),
        ]
        return qa.QAResult(
            question=question, answer="Snow is visible in [2].", sources=sources, cited_ids=[7],
            searched_queries=[question, "snowy photo"], images_sent=2, llm_used=True,
        )

    def fake_rag(engine_arg, llm, query, k, *, expand, explain, filter=None, **_):
        assert expand and not explain and k == 20
        hits = [
            FusedHit(**records[0].model_dump(), rank=1, score=0.4, fused_score=0.03, matched_queries=[query, "v1"]),
        ]
        return rag.RagResult(
            original_query=query, expanded_queries=[query, "v1"], results=hits, ai_explanation=None,
            total_results=1, fusion="rrf", llm_used=True,
        )

    monkeypatch.setattr(qa, "answer_question", fake_answer)
    monkeypatch.setattr(rag, "rag_search", fake_rag)
    indexed_tools.llm = "llm"  # type: ignore[assignment]  # only passed through

    answer = call(indexed_tools, "ask_about_images", question="Where is snow?", k=2)
    assert answer["answer"] == "Snow is visible in [2]." and answer["llm_used"] is True
    assert [(s["rank"], s["id"], s["cited"]) for s in answer["sources"]] == [(1, 4, False), (2, 7, True)]
    assert answer["sources"][1]["width"] == records[1].width  # full catalog metadata
    assert answer["searched_queries"] == ["Where is snow?", "snowy photo"]

    found = call(indexed_tools, "search_by_text", query="snow", expand=True)
    assert found["queries"] == ["snow", "v1"] and found["hits"][0]["matched_queries"] == ["snow", "v1"]
