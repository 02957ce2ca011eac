"""Tool schemas: OpenAI strict rules checked by an independent checker, MCP listing rules, golden files.

Regenerate the golden files after an intended change with
``IMG_AGENT_UPDATE_GOLDEN=1 python -m pytest tests/tools/test_tool_schemas.py``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from img_agent.tools import TOOL_NAMES, TOOL_SPECS, chat_completions_tools, get_spec, responses_tools
from img_agent.tools.spec import INJECTED, spec_from_method, tool
from img_agent.tools.mcp_server import mcp_tool_list
from img_agent.tools.openai_tools import strict_parameters

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("IMG_AGENT_UPDATE_GOLDEN") == "1"  # read at import: the autouse fixture clears IMG_AGENT_*

CONTRACT_NAMES = {
    "search_by_text", "search_by_image", "add_images", "remove_images", "merge_buffer", "rebuild_index",
    "index_status", "ask_about_images", "cancel_job", "search_combined", "sync_paths", "find_duplicates",
    "tag_images", "set_description", "list_tags", "describe_images",
}

# ------------------------------------------------------------------------------ strict-mode checker
# Written from OpenAI's structured-outputs rules, independently of the code under test.

SUPPORTED = {
    "type", "description", "properties", "required", "additionalProperties", "items", "anyOf", "enum", "const",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
    "pattern", "format", "$ref", "$defs", "title",
}
FORBIDDEN = {
    "allOf", "oneOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas", "minLength",
    "maxLength", "default", "patternProperties", "unevaluatedProperties", "propertyNames", "minProperties",
    "maxProperties", "uniqueItems", "contains",
}
TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}
FORMATS = {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
MAX_DEPTH = 5
MAX_PROPERTIES = 5000


def strict_violations(schema: dict[str, Any]) -> list[str]:
    """Every way ``schema`` (a function's ``parameters``) breaks OpenAI's strict-mode rules."""
    problems: list[str] = []
    total_properties = 0

    if schema.get("type") != "object" or "anyOf" in schema:
        problems.append("root: must be a plain object schema, not anyOf")

    def types_of(node: dict[str, Any]) -> set[str]:
        t = node.get("type")
        return {t} if isinstance(t, str) else set(t or ())

    def walk(node: Any, path: str, depth: int) -> None:
        nonlocal total_properties
        if not isinstance(node, dict):
            problems.append(f"{path}: schema must be an object")
            return
        for key in node:
            if key in FORBIDDEN:
                problems.append(f"{path}: keyword {key!r} is not allowed in strict mode")
            elif key not in SUPPORTED:
                problems.append(f"{path}: unknown keyword {key!r}")
        declared = types_of(node)
        if not declared <= TYPES:
            problems.append(f"{path}: bad type {node.get('type')!r}")
        if "type" not in node and not any(k in node for k in ("anyOf", "$ref", "enum", "const")):
            problems.append(f"{path}: no type")
        if "format" in node and node["format"] not in FORMATS:
            problems.append(f"{path}: format {node['format']!r} not supported")
        if "$ref" in node:
            problems.append(f"{path}: $ref left in the schema (should be inlined)")
        if "object" in declared or "properties" in node:
            if depth > MAX_DEPTH:
                problems.append(f"{path}: nested deeper than {MAX_DEPTH} levels")
            properties = node.get("properties", {})
            total_properties += len(properties)
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties must be false")
            if list(node.get("required", [])) != list(properties):
                problems.append(f"{path}: required must list every property, in order")
            for name, child in properties.items():
                walk(child, f"{path}.{name}", depth + 1)
        if "array" in declared:
            if "items" not in node:
                problems.append(f"{path}: array without items")
            else:
                walk(node["items"], f"{path}[]", depth)
        for i, option in enumerate(node.get("anyOf", ())):
            walk(option, f"{path}|{i}", depth)

    walk(schema, "parameters", 1)
    if total_properties > MAX_PROPERTIES:
        problems.append(f"more than {MAX_PROPERTIES} properties")
    return problems


def accepts_null(node: dict[str, Any]) -> bool:
    if "null" in ({node["type"]} if isinstance(node.get("type"), str) else set(node.get("type") or ())):
        return True
    return any(accepts_null(option) for option in node.get("anyOf", ()))


def test_checker_catches_violations() -> None:
    bad = {
        "type": "object",
        "properties": {"a": {"type": "string", "minLength": 1}, "b": {"oneOf": [{"type": "integer"}]}},
        "required": ["a"],
    }
    found = "\n".join(strict_violations(bad))
    for expected in ("additionalProperties", "required must list", "'minLength'", "'oneOf'", "no type"):
        assert expected in found
    assert strict_violations({"anyOf": [{"type": "object"}]})  # root must be an object


# ------------------------------------------------------------------------------ OpenAI schemas


def test_tool_names_are_the_contract() -> None:
    assert set(TOOL_NAMES) == CONTRACT_NAMES
    assert len(TOOL_NAMES) == len(set(TOOL_NAMES))
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name in TOOL_NAMES)


@pytest.mark.parametrize("spec", TOOL_SPECS, ids=lambda s: s.name)
def test_openai_parameters_satisfy_strict_rules(spec) -> None:
    schema = strict_parameters(spec.arguments_model())
    assert strict_violations(schema) == []
    model = spec.arguments_model()
    for name, field in model.model_fields.items():
        prop = schema["properties"][name]
        assert prop.get("description"), f"{spec.name}.{name} has no description"
        # optional <=> nullable: null is how a strict caller says "use the default"
        assert accepts_null(prop) == (not field.is_required()), f"{spec.name}.{name}"
        if not field.is_required() and field.default is not None:
            assert "null" in prop["description"], f"{spec.name}.{name}: description should say what null means"
    assert 0 < len(spec.description) <= 1024
    assert "\n\n" not in spec.description.split("\n\n", 1)[0]


def test_openai_entries_shape() -> None:
    chat = chat_completions_tools()
    flat = responses_tools()
    assert [entry["function"]["name"] for entry in chat] == list(TOOL_NAMES)
    for wrapped, plain in zip(chat, flat, strict=True):
        assert wrapped["type"] == "function" and plain["type"] == "function"
        assert wrapped["function"]["strict"] is True and plain["strict"] is True
        assert {k: v for k, v in plain.items() if k != "type"} == wrapped["function"]
        assert set(wrapped["function"]) == {"name", "description", "parameters", "strict"}
    # thumbnails are an MCP-only presentation option; injected parameters are never exposed
    for entry in chat:
        props = entry["function"]["parameters"]["properties"]
        assert not {"thumbnails", "thumbnail_size", "progress", "cancel"} & set(props)
    assert chat_completions_tools(names=["index_status"])[0]["function"]["name"] == "index_status"


def test_openai_schemas_validate_with_the_openai_package() -> None:
    """The openai client accepts the entries as typed params (a shape check, not a rules check)."""
    from openai.types.chat import ChatCompletionToolParam
    from pydantic import TypeAdapter

    TypeAdapter(list[ChatCompletionToolParam]).validate_python(chat_completions_tools())


# ------------------------------------------------------------------------------ MCP listing


def test_mcp_tools_follow_the_spec_points() -> None:
    listed = mcp_tool_list()
    assert [entry["name"] for entry in listed] == list(TOOL_NAMES)  # stable order
    for entry in listed:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", entry["name"])
        assert entry["title"] and entry["description"]
        assert entry["inputSchema"]["type"] == "object"
        assert entry["outputSchema"]["type"] == "object"
        assert set(entry["annotations"]) >= {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}
        assert not {"progress", "cancel", "ctx"} & set(entry["inputSchema"]["properties"])
    by_name = {entry["name"]: entry for entry in listed}
    assert by_name["remove_images"]["annotations"]["destructiveHint"] is True
    assert by_name["index_status"]["annotations"]["readOnlyHint"] is True
    assert by_name["add_images"]["annotations"]["readOnlyHint"] is False
    assert "thumbnails" in by_name["search_by_text"]["inputSchema"]["properties"]
    assert "thumbnails" not in by_name["index_status"]["inputSchema"]["properties"]
    assert not any(entry["annotations"]["openWorldHint"] for entry in listed)  # no LLM configured


def test_mcp_open_world_only_with_an_llm() -> None:
    listed = {entry["name"]: entry["annotations"]["openWorldHint"] for entry in mcp_tool_list(llm_configured=True)}
    assert listed["ask_about_images"] and listed["search_by_text"]
    assert not listed["search_by_image"] and not listed["add_images"]


# ------------------------------------------------------------------------------ golden files


@pytest.mark.parametrize(
    ("name", "produce"),
    [
        ("openai_chat_tools.json", chat_completions_tools),
        ("openai_responses_tools.json", responses_tools),
        ("mcp_tools.json", mcp_tool_list),
    ],
)
def test_golden_schemas(name: str, produce) -> None:
    text = json.dumps(produce(), indent=2, ensure_ascii=False) + "\n"
    path = GOLDEN / name
    if UPDATE_GOLDEN or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not UPDATE_GOLDEN:
            pytest.fail(f"golden file {name} was missing and has been written; check it and run again")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed; if intended, regenerate (see module docstring)"


# ------------------------------------------------------------------------------ definition guards


class _Result(BaseModel):
    ok: bool


class _Broken:
    @tool(title="t", read_only=True, destructive=False, idempotent=True)
    def no_description(self, x: int) -> _Result:
        """Doc."""
        return _Result(ok=True)

    @tool(title="t", read_only=True, destructive=False, idempotent=True)
    def not_a_model(self, x: Annotated[int, Field(description="x")]) -> dict:
        """Doc."""
        return {}

    @tool(title="t", read_only=True, destructive=False, idempotent=True)
    def bad_injection(self, hook: Annotated[int | None, INJECTED] = None) -> _Result:
        """Doc."""
        return _Result(ok=True)

    @tool(title="t", read_only=True, destructive=False, idempotent=True)
    def no_docstring(self) -> _Result:
        return _Result(ok=True)


@pytest.mark.parametrize("method", ["no_description", "not_a_model", "bad_injection", "no_docstring"])
def test_a_tool_definition_must_be_complete(method: str) -> None:
    with pytest.raises(TypeError):
        spec_from_method(getattr(_Broken, method))


def test_add_images_names_the_extensions_the_walk_uses() -> None:
    """The description lists the image extensions (kept literal so the server starts without Pillow)."""
    from img_agent.embed.images import IMAGE_EXTENSIONS

    description = get_spec("add_images").arguments_model().model_fields["paths"].description or ""
    listed = set(re.findall(r"\.[a-z]+", description.split("searched for", 1)[1]))
    assert listed == set(IMAGE_EXTENSIONS)
