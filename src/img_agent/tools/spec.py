"""What a tool is: a typed method marked with :func:`tool`, and the :class:`ToolSpec` derived from it.

A tool is a method whose parameters are written as ``Annotated[..., Field(description=..., ge=...,
le=...)]``, whose docstring is its description and whose return annotation is a pydantic model.
:func:`spec_from_method` reflects such a method into a :class:`ToolSpec`: the argument model that
validates every call (extra keys forbidden), the result model, the behaviour hints, and the call
itself. Every adapter derives its schemas, validation and error texts from the spec; none writes its
own.

Two kinds of parameters are not plain model-facing parameters of the method:

- parameters marked :data:`INJECTED` (``progress``, ``cancel``) are supplied by the adapter and are
  in no schema;
- *options* (:meth:`ToolSpec.with_options`) are parameters an adapter adds to a tool's schema for
  its own presentation: they are validated with the rest but never passed to the method.

This module knows no protocol and no particular tool set.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import threading
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from img_agent.errors import ImgAgentError, InvalidInputError
from img_agent.results import ProgressCallback

logger = logging.getLogger(__name__)


class _Injected:
    """Marks a parameter the adapter supplies (``Annotated[T, INJECTED]``); it is in no schema."""

    def __repr__(self) -> str:
        return "INJECTED"


INJECTED = _Injected()
_INJECTABLE = frozenset({"progress", "cancel"})


@dataclass(frozen=True)
class ToolHints:
    """How a tool behaves, stated once; protocol annotations are derived from it.

    Attributes:
        read_only: it changes nothing (the index, the files, the settings).
        destructive: it can remove something (index entries; files are never touched).
        idempotent: calling it again with the same arguments has no further effect.
        uses_llm: it may call the configured LLM, i.e. talk to a service outside this machine,
            so it is open-world exactly when an LLM is configured.
        costly: it runs long index work or paid LLM calls (adding, merging, rebuilding, describing).
    """

    read_only: bool
    destructive: bool
    idempotent: bool
    uses_llm: bool = False
    costly: bool = False

    @property
    def needs_confirmation(self) -> bool:
        """Whether a person confirms a call first wherever one can be asked (the chat loop, MCP elicitation):
        it can remove something, or it is costly, so text inside the collection must not trigger it alone."""
        return self.destructive or self.costly

    def open_world(self, llm_configured: bool) -> bool:
        """Whether the tool may reach outside this machine (only ever through the configured LLM)."""
        return self.uses_llm and llm_configured


@dataclass(frozen=True)
class _ToolMarks:
    title: str
    hints: ToolHints
    shows_images: bool


_F = TypeVar("_F", bound=Callable[..., Any])


def tool(
    *,
    title: str,
    read_only: bool,
    destructive: bool,
    idempotent: bool,
    uses_llm: bool = False,
    costly: bool = False,
    shows_images: bool = False,
) -> Callable[[_F], _F]:
    """Mark a method as a tool (its name is the method's name).

    ``shows_images``: the result lists images (``hits`` or ``sources`` with ids), so an adapter
    that can carry images may offer thumbnails of the first ones.
    """

    def mark(function: _F) -> _F:
        function.__tool_marks__ = _ToolMarks(  # type: ignore[attr-defined]
            title, ToolHints(read_only, destructive, idempotent, uses_llm, costly), shows_images
        )
        return function

    return mark


class ToolArgumentsError(InvalidInputError):
    """A tool was called with arguments its schema does not allow; the message lists what is wrong."""


class UnknownToolError(InvalidInputError):
    """A tool name that is not one of the tools offered."""


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """Everything an adapter needs about one tool, derived from its method by :func:`spec_from_method`."""

    name: str
    title: str
    description: str
    hints: ToolHints
    shows_images: bool
    function: Callable[..., BaseModel]
    parameters: tuple[inspect.Parameter, ...]
    """The model-facing parameters of the method, keyword-only, annotations evaluated."""
    injected: frozenset[str]
    result_type: type[BaseModel]
    options: tuple[inspect.Parameter, ...]
    """Presentation parameters an adapter added (:meth:`with_options`); validated, never passed on."""
    _model: type[BaseModel]

    @property
    def accepted(self) -> tuple[inspect.Parameter, ...]:
        """Every parameter a caller may pass: the method's, then the options."""
        return self.parameters + self.options

    def arguments_model(self) -> type[BaseModel]:
        """The pydantic model that validates a call's arguments (extra keys forbidden)."""
        return self._model

    def with_options(self, options: tuple[inspect.Parameter, ...]) -> ToolSpec:
        """This tool with extra keyword-only ``options`` in its schema and validation.

        The options reach the adapter in :meth:`parse`'s result; :meth:`call` leaves them out.
        """
        accepted = self.parameters + options
        return dataclasses.replace(self, options=options, _model=_arguments_model(self.name, accepted))

    def parse(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """Validate raw JSON arguments; returns every accepted parameter by name, defaults filled in.

        Forgiving where that cannot hide a mistake: ``null`` for an optional parameter means its
        default (strict OpenAI schemas send ``null`` for "not given"), and a list sent as a JSON string
        (some clients do) is parsed.

        Raises:
            ToolArgumentsError: with one message naming every problem and the accepted parameters.
        """
        model = self._model
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ToolArgumentsError(
                f"Invalid arguments for {self.name}: expected a JSON object, got {type(arguments).__name__}."
            )
        data: dict[str, Any] = {}
        for key, value in arguments.items():
            field = model.model_fields.get(key)
            if field is not None and value is None and not field.is_required():
                continue
            if field is not None and isinstance(value, str) and _expects_container(field.annotation):
                data[key] = _json_container(value)
            else:
                data[key] = value
        try:
            validated = model.model_validate(data)
        except ValidationError as exc:
            raise ToolArgumentsError(self._explain(exc, model)) from None
        return {name: getattr(validated, name) for name in model.model_fields}

    def call(
        self,
        toolbox: object,
        arguments: Mapping[str, Any],
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> BaseModel:
        """Run the tool on ``toolbox`` (the object whose method it is) with validated ``arguments``."""
        kwargs = {p.name: arguments[p.name] for p in self.parameters if p.name in arguments}
        if "progress" in self.injected:
            kwargs["progress"] = progress
        if "cancel" in self.injected:
            kwargs["cancel"] = cancel
        return self.function(toolbox, **kwargs)

    def _explain(self, exc: ValidationError, model: type[BaseModel]) -> str:
        problems: list[str] = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "arguments"
            if error["type"] == "missing":
                problem = f"'{where}' is required"
            elif error["type"] == "extra_forbidden":
                problem = f"'{where}' is not a parameter of {self.name}"
            else:
                problem = f"'{where}': {error['msg']} (got {_preview(error.get('input'))})"
            if problem not in problems:
                problems.append(problem)
        accepted = ", ".join(
            f"{name} (required)" if field.is_required() else name for name, field in model.model_fields.items()
        )
        return f"Invalid arguments for {self.name}: {'; '.join(problems)}. Parameters: {accepted or 'none'}."


def _json_container(text: str) -> Any:
    """``text`` parsed, if it is a JSON list or object; else ``text`` unchanged (validation will say why)."""
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return decoded if isinstance(decoded, (list, dict)) else text


def _preview(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expects_container(annotation: Any) -> bool:
    """Whether a field's type is (or may be) a list or an object."""
    if get_origin(annotation) is Annotated:
        return _expects_container(get_args(annotation)[0])
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset, dict):
        return True
    if origin is not None:
        return any(_expects_container(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_injected(annotation: Any) -> bool:
    return get_origin(annotation) is Annotated and any(meta is INJECTED for meta in annotation.__metadata__)


def _reflow(doc: str) -> str:
    """A docstring as a description: paragraphs kept, the line breaks inside them joined."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _arguments_model(name: str, parameters: tuple[inspect.Parameter, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        p.name: (p.annotation, ... if p.default is inspect.Parameter.empty else p.default) for p in parameters
    }
    return create_model(f"{_camel(name)}Arguments", __config__=ConfigDict(extra="forbid"), **fields)


def spec_from_method(function: Callable[..., Any]) -> ToolSpec:
    """The spec of a method marked with :func:`tool`.

    Raises:
        TypeError: the definition is incomplete (a parameter without a description, a result that
            is not a pydantic model, no docstring, a misdeclared injected parameter).
    """
    marks: _ToolMarks = function.__tool_marks__  # type: ignore[attr-defined]
    name = function.__name__
    hints = typing.get_type_hints(function, include_extras=True)
    parameters: list[inspect.Parameter] = []
    injected: set[str] = set()
    for param in list(inspect.signature(function).parameters.values())[1:]:  # skip self
        annotation = hints[param.name]
        if _is_injected(annotation):
            if param.name not in _INJECTABLE or param.default is not None:
                raise TypeError(f"{name}: injected parameter {param.name!r} must be one of {sorted(_INJECTABLE)} with default None")
            injected.add(param.name)
            continue
        if get_origin(annotation) is not Annotated or not any(
            getattr(meta, "description", None) for meta in annotation.__metadata__
        ):
            raise TypeError(f"{name}: parameter {param.name!r} needs Annotated[..., Field(description=...)]")
        parameters.append(param.replace(annotation=annotation, kind=inspect.Parameter.KEYWORD_ONLY))
    result_type = hints.get("return")
    if not (isinstance(result_type, type) and issubclass(result_type, BaseModel)):
        raise TypeError(f"{name}: the return annotation must be a pydantic model, got {result_type!r}")
    description = _reflow(function.__doc__ or "")
    if not description:
        raise TypeError(f"{name}: a tool needs a docstring (it is the tool's description)")
    params = tuple(parameters)
    return ToolSpec(
        name=name,
        title=marks.title,
        description=description,
        hints=marks.hints,
        shows_images=marks.shows_images,
        function=function,
        parameters=params,
        injected=frozenset(injected),
        result_type=result_type,
        options=(),
        _model=_arguments_model(name, params),
    )


def specs_of(cls: type) -> tuple[ToolSpec, ...]:
    """The specs of every method of ``cls`` and its bases marked with :func:`tool`: the class's own first,
    then each base's in the order the bases are listed, each in definition order."""
    seen: dict[str, object] = {}
    for klass in cls.__mro__:
        for name, member in vars(klass).items():
            if hasattr(member, "__tool_marks__") and name not in seen:
                seen[name] = member
    return tuple(spec_from_method(member) for member in seen.values())


def error_message(tool_name: str, exc: BaseException) -> str:
    """The text a model gets when a tool call fails, the same on every surface.

    Errors img-agent raises on purpose carry an actionable message and are passed on as they are.
    Anything else is a bug: it is logged with its traceback (to stderr) and the model gets a
    generic message that leaks no internals.
    """
    if isinstance(exc, ImgAgentError):
        return str(exc) or (type(exc).__doc__ or type(exc).__name__).strip()
    logger.error("Tool %s failed unexpectedly", tool_name, exc_info=exc)
    return (
        f"{tool_name} failed with an unexpected internal error ({type(exc).__name__}). "
        "The server log has the details; try again, and report a bug if it keeps happening."
    )
