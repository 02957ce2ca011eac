"""The tools img-agent offers to language models, each defined once.

A tool is a method of :class:`ImageTools` marked with :func:`tool`: typed parameters written as
``Annotated[..., Field(description=..., ge=..., le=...)]``, a docstring that is the tool's
description, and a pydantic model as its result. From that one definition this module derives a
:class:`ToolSpec` per tool (:data:`TOOL_SPECS`): the argument model that validates every call, the
result model, the behaviour hints behind the MCP annotations, and the call itself.
:mod:`img_agent.tools.mcp_server` and :mod:`img_agent.tools.openai_tools` are thin adapters over
these specs; neither writes a schema, a default or an error text of its own.

Two kinds of parameters never reach a schema the model sees as such:

- parameters marked :data:`INJECTED` (``progress``, ``cancel``) are supplied by the adapter;
- the thumbnail options (:data:`THUMBNAIL_PARAMETERS`) exist on the MCP surface only, for tools
  marked ``shows_images``: MCP can carry images back to a multimodal model, a JSON function
  result cannot. They shape the presentation, not the operation, so the methods do not take them.

Importing this module is cheap: no torch, no faiss, no openai (the agent layer is imported on
first use), so an MCP server answers ``initialize`` at once.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from img_agent.config import MAX_TOPK
from img_agent.errors import ImageDecodeError, ImgAgentError, InvalidInputError
from img_agent.results import (
    AddReport,
    IndexStatus,
    MaintenanceReport,
    ProgressCallback,
    RemoveReport,
    SearchFilter,
    SearchHit,
    SkippedItem,
)
from img_agent.tools.sandbox import MAX_INLINE_IMAGE_BYTES, MAX_INLINE_IMAGE_CHARS, Sandbox

if TYPE_CHECKING:
    from img_agent.agent.llm import LLMClient
    from img_agent.index.engine import Engine

logger = logging.getLogger(__name__)

Surface = Literal["mcp", "openai"]
"""Where a call comes from; the MCP surface adds the thumbnail options."""

# ---------------------------------------------------------------------------------- limits

MAX_QUERY_CHARS = 1000
"""Longest text query or question; CLIP reads about 77 tokens anyway."""
MAX_PATHS_PER_CALL = 1000
"""Most files/folders one add_images call may name (folders can hold any number of images)."""
MAX_IDS_PER_CALL = 10_000
"""Most ids or paths one remove_images call may name."""
MAX_ANSWER_K = 50
"""Most images ask_about_images retrieves: each becomes a line, or a thumbnail, in the LLM prompt."""
MAX_INDEX_STRING_CHARS = 200

DEFAULT_THUMBNAILS = 3
MAX_THUMBNAILS = 10
DEFAULT_THUMBNAIL_SIDE = 192
MIN_THUMBNAIL_SIDE = 32
MAX_THUMBNAIL_SIDE = 512
THUMBNAIL_QUALITY = 75
MAX_THUMBNAIL_BYTES_TOTAL = 2 * 1024 * 1024
"""Thumbnails of one result stop once their JPEG bytes add up to this."""

EMPTY_INDEX_MESSAGE = (
    "The index is empty: no images have been added yet. Call add_images with image files or folders "
    "(under the allowed folders; index_status shows the collection) and search again."
)

# ---------------------------------------------------------------------------------- markers


class _Injected:
    """Marks a parameter the adapter supplies (``Annotated[T, INJECTED]``); it is in no schema."""

    def __repr__(self) -> str:
        return "INJECTED"


INJECTED = _Injected()
_INJECTABLE = frozenset({"progress", "cancel"})


@dataclass(frozen=True)
class ToolHints:
    """How a tool behaves, stated once; the MCP annotations are derived from it.

    Attributes:
        read_only: it changes nothing (the index, the files, the settings).
        destructive: it can remove something (index entries; files are never touched).
        idempotent: calling it again with the same arguments has no further effect.
        uses_llm: it may call the configured LLM, i.e. talk to a service outside this machine,
            so it is open-world exactly when an LLM is configured.
    """

    read_only: bool
    destructive: bool
    idempotent: bool
    uses_llm: bool = False

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
    shows_images: bool = False,
) -> Callable[[_F], _F]:
    """Mark a method of :class:`ImageTools` as a tool (its name is the method's name).

    ``shows_images``: the result lists images (``hits`` or ``sources`` with ids), so the MCP
    surface offers thumbnails of the first ones.
    """

    def mark(function: _F) -> _F:
        function.__tool_marks__ = _ToolMarks(  # type: ignore[attr-defined]
            title, ToolHints(read_only, destructive, idempotent, uses_llm), shows_images
        )
        return function

    return mark


# ---------------------------------------------------------------------------------- results


class ToolHit(SearchHit):
    """One image found: catalog record, 1-based rank and cosine score."""

    matched_queries: list[str] | None = Field(
        None, description="With expand: the query variants whose results contained this image."
    )


class SearchResult(BaseModel):
    """Images found for one query, best first."""

    query: str = Field(description="What was searched: the text query, or a description of the query image.")
    hits: list[ToolHit] = Field(description="Matching images, best first.")
    queries: list[str] = Field(
        default_factory=list, description="Text queries searched: the query first, then any LLM-written variants."
    )
    notes: list[str] = Field(default_factory=list, description="Things worth knowing about this result.")


class AnswerSource(SearchHit):
    """An image retrieved for a question; ``rank`` is the [n] label the answer cites."""

    cited: bool = Field(description="Whether the answer cites this image.")


class AnswerResult(BaseModel):
    """An answer to a question about the images, with the images it rests on."""

    question: str
    answer: str | None = Field(description="The LLM's answer citing images as [n], or null when no LLM answered.")
    llm_used: bool = Field(description="Whether an LLM produced the answer or query variants.")
    sources: list[AnswerSource] = Field(description="Images retrieved for the question, best first.")
    searched_queries: list[str] = Field(description="Queries searched: the question first, then its variants.")
    notes: list[str] = Field(default_factory=list, description="What was skipped or failed, and why.")


# ---------------------------------------------------------------------------------- shared parameter types

TopK = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_TOPK,
        description=f"How many images to return (1-{MAX_TOPK}); null = the server's default (usually 20).",
    ),
]
PathPrefix = Annotated[
    str | None,
    Field(
        max_length=4096,
        description="Only return images whose absolute path starts with this, e.g. '/photos/2023/'. null = no filter.",
    ),
]
PathGlob = Annotated[
    str | None,
    Field(
        max_length=4096,
        description="Only return images whose absolute path matches this glob ('*' also spans '/'), "
        "e.g. '*/holidays/*.jpg'. null = no filter.",
    ),
]

THUMBNAIL_PARAMETERS: tuple[inspect.Parameter, ...] = (
    inspect.Parameter(
        "thumbnails",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_THUMBNAILS,
        annotation=Annotated[
            int,
            Field(
                ge=0,
                le=MAX_THUMBNAILS,
                description=f"How many of the first images to also return as small JPEG thumbnails you can "
                f"look at (0-{MAX_THUMBNAILS}; 0 = none).",
            ),
        ],
    ),
    inspect.Parameter(
        "thumbnail_size",
        inspect.Parameter.KEYWORD_ONLY,
        default=DEFAULT_THUMBNAIL_SIDE,
        annotation=Annotated[
            int,
            Field(
                ge=MIN_THUMBNAIL_SIDE,
                le=MAX_THUMBNAIL_SIDE,
                description=f"Longest side of each thumbnail in pixels ({MIN_THUMBNAIL_SIDE}-{MAX_THUMBNAIL_SIDE}).",
            ),
        ],
    ),
)
"""MCP-only presentation options of tools marked ``shows_images``."""


def default_sandbox(engine: Engine, roots: Sequence[Path] | None = None) -> Sandbox:
    """The sandbox for ``engine``: ``roots`` if given, else the configured image folders
    (``Settings.image_roots``) plus every folder ever indexed into this store."""
    settings = engine.settings
    if roots is None:
        roots = [*settings.image_roots, *(Path(p) for p in engine.indexed_roots())]
    return Sandbox(roots, max_file_bytes=settings.max_file_bytes)


def _search_filter(path_prefix: str | None, path_glob: str | None) -> SearchFilter | None:
    flt = SearchFilter(path_prefix=path_prefix or None, path_glob=path_glob or None)
    return flt if flt.active else None


# ---------------------------------------------------------------------------------- the tools


class ImageTools:
    """The tool implementations, over one engine. Thread-safe: the engine is, nothing here mutates.

    Args:
        engine: the index.
        sandbox: the folders the tools may read files from; default :func:`default_sandbox`.
        llm: the configured LLM, or ``None`` (LLM features then say that none is configured).
    """

    def __init__(self, engine: Engine, sandbox: Sandbox | None = None, *, llm: LLMClient | None = None) -> None:
        self.engine = engine
        self.sandbox = sandbox if sandbox is not None else default_sandbox(engine)
        self.llm = llm

    # -- searching -----------------------------------------------------------------------------

    @tool(title="Search images by text", read_only=True, destructive=False, idempotent=True, uses_llm=True, shows_images=True)
    def search_by_text(
        self,
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                description="What the images should show, in plain words, e.g. 'a red bicycle leaning on a wall'. "
                "English works best.",
            ),
        ],
        k: TopK = None,
        path_prefix: PathPrefix = None,
        path_glob: PathGlob = None,
        expand: Annotated[
            bool,
            Field(
                description="Also search a few LLM-written rewrites of the query and fuse the results (finds more "
                "for vague or non-English queries; needs a configured LLM, otherwise a plain search with a note)."
            ),
        ] = False,
    ) -> SearchResult:
        """Find indexed images that match a text description (CLIP), best first.

        Each hit has the image id, its absolute path, a cosine similarity score (higher is better; scores
        are comparable across searches) and catalog metadata (size, format, tags). Use the ids with
        search_by_image (image_id) to find similar images, or with remove_images.
        """
        query = " ".join(query.split())
        if not query:
            raise InvalidInputError("The query is empty; describe what the images should show.")
        flt = _search_filter(path_prefix, path_glob)
        if expand:
            from img_agent.agent.rag import rag_search  # imports the openai client: not at server start

            k_eff = k if k is not None else self.engine.settings.topk
            rag = rag_search(self.engine, self.llm, query, k_eff, expand=True, explain=False, filter=flt)
            hits = [ToolHit.model_validate(hit.model_dump()) for hit in rag.results]
            result = SearchResult(query=query, hits=hits, queries=rag.expanded_queries, notes=list(rag.notes))
        else:
            found = self.engine.search_text(query, k=k, filter=flt)
            result = SearchResult(query=query, hits=[ToolHit.model_validate(h.model_dump()) for h in found], queries=[query])
        return self._checked(result, flt)

    @tool(title="Search images by example image", read_only=True, destructive=False, idempotent=True, shows_images=True)
    def search_by_image(
        self,
        *,
        path: Annotated[
            str | None,
            Field(
                max_length=4096,
                description="An image file on the server's machine, inside the allowed folders (absolute, or "
                "relative to an allowed folder).",
            ),
        ] = None,
        image_base64: Annotated[
            str | None,
            Field(
                max_length=MAX_INLINE_IMAGE_CHARS,
                description=f"The image itself, base64-encoded JPEG/PNG/WebP (a data: URL is accepted), at most "
                f"{MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MiB decoded.",
            ),
        ] = None,
        image_id: Annotated[
            int | None,
            Field(ge=0, description="The id of an indexed image (from earlier results): find images like it, excluding itself."),
        ] = None,
        k: TopK = None,
        path_prefix: PathPrefix = None,
        path_glob: PathGlob = None,
    ) -> SearchResult:
        """Find indexed images that look like an example image (CLIP), best first.

        Give exactly one of path, image_base64 or image_id. Hits carry id, path, cosine score and catalog
        metadata, as in search_by_text.
        """
        given = [name for name, value in (("path", path), ("image_base64", image_base64), ("image_id", image_id)) if value is not None]
        if len(given) != 1:
            detail = "none was given" if not given else f"got {', '.join(given)}"
            raise InvalidInputError(f"Give exactly one of path, image_base64 or image_id ({detail}).")
        flt = _search_filter(path_prefix, path_glob)
        if path is not None:
            resolved, data = self.sandbox.read_file(path)
            query = f"image file {resolved}"
            hits = self._search_image(data, k, flt, what=repr(path))
        elif image_base64 is not None:
            data = self.sandbox.decode_base64(image_base64)
            query = f"inline image ({len(data):,} bytes)"
            hits = self._search_image(data, k, flt, what="image_base64")
        else:
            assert image_id is not None  # narrowed by the count above
            hits = self.engine.search_similar(image_id, k=k, filter=flt)
            query = f"image id {image_id}"
        return self._checked(SearchResult(query=query, hits=[ToolHit.model_validate(h.model_dump()) for h in hits]), flt)

    @tool(title="Answer a question about the images", read_only=True, destructive=False, idempotent=True, uses_llm=True, shows_images=True)
    def ask_about_images(
        self,
        question: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                description="A question the images can answer, e.g. 'Which photos show snow?' or "
                "'What colour is the car in the garage pictures?'.",
            ),
        ],
        k: Annotated[
            int | None,
            Field(ge=1, le=MAX_ANSWER_K, description=f"How many relevant images to retrieve and consider (1-{MAX_ANSWER_K}); null = a few."),
        ] = None,
        path_prefix: PathPrefix = None,
        path_glob: PathGlob = None,
    ) -> AnswerResult:
        """Answer a question from the most relevant indexed images.

        Retrieves the images that best match the question, then has the configured LLM answer from them,
        citing images as [n] (n = the source's rank). Without a configured LLM, answer is null and the
        retrieved images are returned so you can answer yourself.
        """
        from img_agent.agent.qa import DEFAULT_QA_K, answer_question  # imports the openai client: not at start

        flt = _search_filter(path_prefix, path_glob)
        qa = answer_question(self.engine, self.llm, question, k if k is not None else DEFAULT_QA_K, filter=flt)
        if not qa.sources:
            self._raise_if_empty()
        records = {record.id: record for record in self.engine.get([source.id for source in qa.sources])}
        sources = [
            AnswerSource(**records[s.id].model_dump(), rank=s.label, score=s.score, cited=s.cited) for s in qa.sources
        ]
        return AnswerResult(
            question=qa.question,
            answer=qa.answer,
            llm_used=qa.llm_used,
            sources=sources,
            searched_queries=qa.searched_queries,
            notes=list(qa.notes),
        )

    # -- changing the collection ----------------------------------------------------------------

    @tool(title="Add images to the index", read_only=False, destructive=False, idempotent=True)
    def add_images(
        self,
        paths: Annotated[
            list[Annotated[str, Field(max_length=4096)]],
            Field(
                min_length=1,
                max_length=MAX_PATHS_PER_CALL,
                description="Image files and/or folders inside the allowed folders (absolute, or relative to an "
                "allowed folder). Folders are searched for .jpg .jpeg .png .gif .bmp .tif .tiff .webp files.",
            ),
        ],
        recursive: Annotated[bool, Field(description="Also add images in subfolders of the given folders.")] = True,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
        cancel: Annotated[threading.Event | None, INJECTED] = None,
    ) -> AddReport:
        """Index image files and folders so they become searchable.

        New and changed files are encoded (this takes a while for thousands of images; progress is
        reported); files already indexed with the same content are counted as unchanged. Files that cannot
        be used (unreadable, not an image, outside the allowed folders) are skipped with a reason, and the
        rest go through. Every image listed as added is searchable, also when the call is cancelled.
        """
        inputs = []
        skipped: list[SkippedItem] = []
        refusals: list[InvalidInputError] = []
        for raw in paths:
            try:
                inputs.append(self.sandbox.resolve(raw))
            except InvalidInputError as exc:  # not found, outside the roots, a URL
                refusals.append(exc)
                skipped.append(SkippedItem(path=raw, reason=str(exc)))
        if not inputs:
            if len(refusals) == 1:
                raise refusals[0]
            raise InvalidInputError("None of the paths can be added: " + " ".join(str(exc) for exc in refusals))
        files, walk_skips = self.sandbox.collect(inputs, recursive=recursive)
        report = self.engine.add_paths(files, recursive=False, progress=progress, cancel=cancel)
        return report.model_copy(update={"skipped": skipped + walk_skips + report.skipped})

    @tool(title="Remove images from the index", read_only=False, destructive=True, idempotent=True)
    def remove_images(
        self,
        ids: Annotated[
            list[int] | None,
            Field(max_length=MAX_IDS_PER_CALL, description="Ids of images to remove (from search results)."),
        ] = None,
        paths: Annotated[
            list[Annotated[str, Field(max_length=4096)]] | None,
            Field(
                max_length=MAX_IDS_PER_CALL,
                description="Indexed file paths to remove; a folder path removes every image indexed under it.",
            ),
        ] = None,
    ) -> RemoveReport:
        """Remove images from the index (the files themselves are never touched).

        Removed images disappear from the next search at once; their space is reclaimed by rebuild_index.
        Give ids, paths, or both.
        """
        if not ids and not paths:
            raise InvalidInputError("Give the ids and/or paths of the images to remove.")
        return self.engine.remove(ids=ids or (), paths=paths or ())

    # -- maintenance ---------------------------------------------------------------------------

    @tool(title="Merge recently added images into the main index", read_only=False, destructive=False, idempotent=True)
    def merge_buffer(
        self,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
    ) -> MaintenanceReport:
        """Move recently added images from the exact buffer into the main index, without retraining.

        Searches see every image either way; merging keeps searches fast once many images were added.
        index_status says when a merge is advised. Quick; does nothing when the buffer is empty.
        """
        return self.engine.merge(progress=progress)

    @tool(title="Rebuild the index", read_only=False, destructive=False, idempotent=True)
    def rebuild_index(
        self,
        index_string: Annotated[
            str | None,
            Field(
                max_length=MAX_INDEX_STRING_CHARS,
                description="Faiss index type to build, e.g. 'Flat', 'IVF1024,SQ8' or 'IVF4096,PQ32x8'; "
                "null = the configured choice ('auto' picks by collection size).",
            ),
        ] = None,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
    ) -> MaintenanceReport:
        """Retrain and rebuild the main index from the stored vectors of all live images.

        Drops removed images for good and re-fits the index to the collection's size. Searches keep working
        meanwhile. Takes seconds to minutes for large collections; index_status says when it is advised.
        """
        return self.engine.rebuild(progress=progress, index_string=index_string or None)

    @tool(title="Show index status", read_only=True, destructive=False, idempotent=True)
    def index_status(self) -> IndexStatus:
        """How many images are indexed and searchable, how the index is built, the CLIP model in use, and
        advice (hints) on whether a merge or rebuild is due."""
        return self.engine.status()

    # -- helpers -------------------------------------------------------------------------------

    def _search_image(self, data: bytes, k: int | None, flt: SearchFilter | None, *, what: str) -> list[SearchHit]:
        try:
            return self.engine.search_image(data, k=k, filter=flt)
        except ImageDecodeError as exc:
            reason = str(exc).rstrip(". ")
            raise ImageDecodeError(f"{what} cannot be used as a query image ({reason}). Give a JPEG, PNG or WebP image.") from exc

    def _checked(self, result: SearchResult, flt: SearchFilter | None) -> SearchResult:
        """An empty result on an empty index is an error the model can act on; a filter that matched
        nothing gets a note."""
        if not result.hits:
            self._raise_if_empty()
            if flt is not None:
                result.notes.append("No indexed image matches path_prefix/path_glob; loosen or drop the filter.")
        return result

    def _raise_if_empty(self) -> None:
        if self.engine.status().live == 0:
            raise InvalidInputError(EMPTY_INDEX_MESSAGE)


# ---------------------------------------------------------------------------------- specs


class ToolArgumentsError(InvalidInputError):
    """A tool was called with arguments its schema does not allow; the message lists what is wrong."""


class UnknownToolError(InvalidInputError):
    """A tool name that is not one of :data:`TOOL_NAMES`."""


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """Everything the adapters need about one tool, derived from its :class:`ImageTools` method."""

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
    _models: Mapping[Surface, type[BaseModel]]

    def surface_parameters(self, surface: Surface) -> tuple[inspect.Parameter, ...]:
        """The parameters a caller on ``surface`` may pass."""
        extra = THUMBNAIL_PARAMETERS if surface == "mcp" and self.shows_images else ()
        return self.parameters + extra

    def arguments_model(self, surface: Surface) -> type[BaseModel]:
        """The pydantic model that validates a call's arguments on ``surface`` (extra keys forbidden)."""
        return self._models[surface]

    def parse(self, arguments: Mapping[str, Any] | None, surface: Surface) -> dict[str, Any]:
        """Validate raw JSON arguments; returns every parameter of ``surface`` by name, defaults filled in.

        Forgiving where that cannot hide a mistake: ``null`` for an optional parameter means its
        default (strict OpenAI schemas send ``null`` for "not given"), and a list sent as a JSON string
        (some clients do) is parsed.

        Raises:
            ToolArgumentsError: with one message naming every problem and the accepted parameters.
        """
        model = self._models[surface]
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
        tools: ImageTools,
        arguments: Mapping[str, Any],
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> BaseModel:
        """Run the tool with validated ``arguments`` (presentation-only options are ignored)."""
        kwargs = {p.name: arguments[p.name] for p in self.parameters if p.name in arguments}
        if "progress" in self.injected:
            kwargs["progress"] = progress
        if "cancel" in self.injected:
            kwargs["cancel"] = cancel
        return self.function(tools, **kwargs)

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


def _arguments_model(name: str, surface: Surface, parameters: tuple[inspect.Parameter, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {
        p.name: (p.annotation, ... if p.default is inspect.Parameter.empty else p.default) for p in parameters
    }
    suffix = "" if surface == "openai" else "Mcp"
    return create_model(f"{_camel(name)}{suffix}Arguments", __config__=ConfigDict(extra="forbid"), **fields)


def _spec_from_method(function: Callable[..., Any]) -> ToolSpec:
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
    models: dict[Surface, type[BaseModel]] = {"openai": _arguments_model(name, "openai", params)}
    models["mcp"] = (
        _arguments_model(name, "mcp", params + THUMBNAIL_PARAMETERS) if marks.shows_images else models["openai"]
    )
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
        _models=models,
    )


TOOL_SPECS: tuple[ToolSpec, ...] = tuple(
    _spec_from_method(member) for member in vars(ImageTools).values() if hasattr(member, "__tool_marks__")
)
"""Every tool, in definition order (the order tools are listed in)."""

TOOL_NAMES: tuple[str, ...] = tuple(spec.name for spec in TOOL_SPECS)
_BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOL_SPECS}


def get_spec(name: str) -> ToolSpec:
    """The spec of tool ``name``.

    Raises:
        UnknownToolError: naming the tools that exist.
    """
    spec = _BY_NAME.get(name)
    if spec is None:
        raise UnknownToolError(f"Unknown tool {name!r}. Available tools: {', '.join(TOOL_NAMES)}.")
    return spec


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


# ---------------------------------------------------------------------------------- deferred tools

ToolsSource = ImageTools | Future  # a Future[ImageTools] while the engine is still opening


def resolve_tools(source: ToolsSource) -> ImageTools:
    """The :class:`ImageTools` behind ``source``, waiting for it to be opened if need be (blocks).

    Raises:
        the error that prevented it from opening (e.g. a store built with another model).
    """
    return source.result() if isinstance(source, Future) else source
