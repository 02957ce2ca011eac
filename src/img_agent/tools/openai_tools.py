"""The tools as OpenAI function-calling tools (strict mode), and the dispatcher that runs a call.

Schemas are derived from the tools' argument models (:mod:`img_agent.tools.spec`) and rewritten
to what OpenAI's strict mode accepts (:func:`strict_parameters`): every object closed with
``additionalProperties: false`` and listing all its properties as required, an optional parameter
as a union with ``null`` (null means "use the default", and the description says which), no
``default``/``title``, no keywords strict mode rejects (``minLength``/``maxLength``; limits are
still enforced when the call is validated). :func:`dispatch` validates with the same models and
returns the same error texts as the MCP server.

Usage::

    from img_agent.tools import ImageTools, chat_completions_tools, dispatch

    tools = ImageTools(engine)
    response = client.chat.completions.create(model=..., messages=..., tools=chat_completions_tools())
    for call in response.choices[0].message.tool_calls or []:
        result_json = dispatch(tools, call.function.name, call.function.arguments)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from img_agent.tools.image_tools import TOOL_SPECS, ImageTools, get_spec
from img_agent.tools.spec import ToolSpec, error_message

STRICT_KEYWORDS = frozenset(
    {
        "type", "description", "properties", "required", "additionalProperties", "items", "anyOf", "enum",
        "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems",
        "maxItems", "pattern", "format", "$ref", "$defs",
    }
)
"""JSON-schema keywords OpenAI's strict mode supports (structured-outputs documentation)."""

_DROPPED_KEYWORDS = frozenset({"title", "default", "examples", "minLength", "maxLength"})
"""Keywords removed from strict schemas: noise, or not accepted; validation still applies them."""


def strict_parameters(model: type[BaseModel]) -> dict[str, Any]:
    """The strict-mode JSON schema of an argument model (a fresh dict each call).

    Raises:
        ValueError: the model uses a keyword strict mode cannot express (a tool definition bug).
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return _strict(schema, defs, path="parameters")


def _strict(node: dict[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is not None:  # inline: strict mode forbids siblings next to $ref, and our models are not recursive
        target = defs[ref.rsplit("/", 1)[-1]]
        node = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYWORDS:
            continue
        if key not in STRICT_KEYWORDS:
            raise ValueError(f"{path}: keyword {key!r} is not supported by OpenAI strict mode")
        out[key] = value
    if "properties" in out:
        required = set(node.get("required", ()))
        properties = {}
        for name, prop in out["properties"].items():
            child = _strict(prop, defs, f"{path}.{name}")
            if name not in required:
                child = _nullable(child, prop.get("default"))
            properties[name] = child
        out["properties"] = properties
        out["required"] = list(properties)
    if out.get("type") == "object" or "properties" in out:
        out["type"] = "object"
        out.setdefault("properties", {})
        out.setdefault("required", [])
        out["additionalProperties"] = False
    if "items" in out:
        out["items"] = _strict(out["items"], defs, f"{path}[]")
    if "anyOf" in out:
        out["anyOf"] = [_strict(option, defs, f"{path}|") for option in out["anyOf"]]
    return out


def _nullable(schema: dict[str, Any], default: Any) -> dict[str, Any]:
    """``schema`` also accepting null, its description saying what null stands for."""
    schema = dict(schema)
    description = schema.pop("description", None)
    if "anyOf" in schema:
        if not any(option.get("type") == "null" for option in schema["anyOf"]):
            schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    elif isinstance(schema.get("type"), str) and "enum" not in schema and "const" not in schema:
        schema["type"] = [schema["type"], "null"]
    else:
        schema = {"anyOf": [schema, {"type": "null"}]}
    if default is not None and (description is None or "null" not in description):
        hint = f"null = {json.dumps(default)}."
        description = f"{description} {hint}" if description else hint
    if description:
        schema = {"description": description, **schema}
    return schema


def _function(spec: ToolSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "parameters": strict_parameters(spec.arguments_model()),
        "strict": True,
    }


def _selected(names: Iterable[str] | None) -> list[ToolSpec]:
    return list(TOOL_SPECS) if names is None else [get_spec(name) for name in names]


def chat_completions_tools(*, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Chat Completions ``tools`` entries: ``{"type": "function", "function": {..., "strict": true}}``.

    Args:
        names: only these tools, in this order (default: all, in the order they are defined).
    """
    return [{"type": "function", "function": _function(spec)} for spec in _selected(names)]


def responses_tools(*, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Responses API ``tools`` entries: flat ``{"type": "function", "name", ..., "strict": true}``."""
    return [{"type": "function", **_function(spec)} for spec in _selected(names)]


def dispatch(tools: ImageTools, name: str, arguments: str | Mapping[str, Any] | None) -> str:
    """Run one function call and return its result as a JSON string.

    ``arguments`` is the JSON text the model produced (a mapping is accepted too). On success the
    result is the tool's result model as JSON; on any failure it is ``{"error": "<message>"}`` with
    the same message the MCP server would give, so the model can correct itself. Never raises for
    a bad call.
    """
    try:
        spec = get_spec(name)
        if isinstance(arguments, str):
            try:
                raw = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                return _error(f"Invalid arguments for {name}: not valid JSON ({exc.msg} at character {exc.pos}).")
        else:
            raw = arguments
        parsed = spec.parse(raw)
        result = spec.call(tools, parsed)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message for the model; bugs are logged
        return _error(error_message(name, exc))
    return result.model_dump_json()


def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)
