"""The tools img-agent offers to language models: :class:`ImageTools`, its limits and result models.

Each tool is a method of :class:`ImageTools` marked with :func:`~img_agent.tools.spec.tool`; its
:class:`~img_agent.tools.spec.ToolSpec` (:data:`TOOL_SPECS`) is derived from that one definition.
:mod:`img_agent.tools.mcp_server` and :mod:`img_agent.tools.openai_tools` are thin adapters over
these specs; neither writes a schema, a default or an error text of its own.

Importing this module is cheap: no torch, no faiss, no openai (the agent layer is imported on
first use), so an MCP server answers ``initialize`` at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from img_agent.errors import ImageDecodeError, InvalidInputError
from img_agent.results import (
    MAX_TOPK,
    AddReport,
    ProgressCallback,
    RemoveReport,
    SearchFilter,
    SearchHit,
    SkippedItem,
)
from img_agent.tools.confined import ConfinedImages, query_image_guard, removal_targets
from img_agent.tools.duplicate_tools import DuplicateTools
from img_agent.tools.jobs import JobRegistry
from img_agent.tools.limits import (MAX_ANSWER_K, MAX_IDS_PER_CALL, MAX_PATHS_PER_CALL,
                                     MAX_QUERY_CHARS, PROGRESS_POLL_S)
from img_agent.tools.query_tools import QueryTools
from img_agent.tools.store_tools import MaintenanceTools
from img_agent.tools.note_tools import NoteTools
from img_agent.tools.watch_tools import WatchTools
from img_agent.tools.sandbox import MAX_INLINE_IMAGE_BYTES, MAX_INLINE_IMAGE_CHARS, Sandbox
from img_agent.tools.shapes import AnswerResult, AnswerSource, CollapseDuplicates, SearchResult, ToolHit, TopK
from img_agent.tools.spec import INJECTED, ToolSpec, UnknownToolError, specs_of, tool
from img_agent.tools.where import NO_MATCH_NOTE, Where, confine_where

if TYPE_CHECKING:
    from img_agent.agent.llm import LLMClient
    from img_agent.index.engine import Engine

EMPTY_INDEX_MESSAGE = (
    "The index is empty: no images have been added yet. Call add_images with image files or folders "
    "(under the allowed folders; index_status shows the collection) and search again."
)

def default_roots(engine: Engine) -> list[Path]:
    """The folders tools may use by default: the configured image folders (``Settings.image_roots``) plus
    every folder ever indexed into this store without confinement."""
    return [*engine.settings.image_roots, *(Path(p) for p in engine.indexed_roots())]


def default_sandbox(engine: Engine, roots: Sequence[Path] | None = None) -> Sandbox:
    """The sandbox for ``engine``: ``roots`` if given, else :func:`default_roots`."""
    return Sandbox(default_roots(engine) if roots is None else roots, max_file_bytes=engine.settings.max_file_bytes)


# ---------------------------------------------------------------------------------- the tools


class ImageTools(MaintenanceTools, QueryTools, WatchTools, DuplicateTools, NoteTools):
    """The tool implementations, over one engine. Thread-safe: the engine is, nothing here mutates.

    Args:
        engine: the index.
        sandbox: the folders the tools may read files from; default :func:`default_sandbox`.
        llm: the configured LLM, or ``None`` (LLM features then say that none is configured).
        jobs: where indexing runs as jobs; one registry per store, shared by every client's tools.
    """

    def __init__(self, engine: Engine, sandbox: Sandbox | None = None, *, llm: LLMClient | None = None,
                 jobs: JobRegistry | None = None) -> None:
        self.engine = engine
        self.sandbox = sandbox if sandbox is not None else default_sandbox(engine)
        self.images = ConfinedImages(engine, self.sandbox)
        """Thumbnails and the LLM recipes' retrieval, every file byte read inside the sandbox."""
        self.llm = llm
        self.jobs = jobs if jobs is not None else JobRegistry()

    # -- searching -----------------------------------------------------------------------------

    @tool(title="Search images by text", read_only=True, destructive=False, idempotent=True, uses_llm=True, shows_images=True)
    def search_by_text(
        self,
        query: Annotated[str, Field(
            min_length=1, max_length=MAX_QUERY_CHARS,
            description="What the images should show, in plain words, e.g. 'a red bicycle leaning on a wall'. "
            "English works best.",
        )],
        k: TopK = None,
        where: Where = None,
        collapse_duplicates: CollapseDuplicates = False,
        expand: Annotated[bool, Field(
            description="Also search a few LLM-written rewrites of the query and fuse the results (finds more "
            "for vague or non-English queries; needs a configured LLM, otherwise a plain search with a note)."
        )] = False,
    ) -> SearchResult:
        """Find indexed images that match a text description (CLIP), best first.

        Each hit has the image id, its absolute path, a cosine similarity score (higher is better; scores
        are comparable across searches) and catalog metadata (size, format, tags). Use the ids with
        search_by_image (image_id) to find similar images, or with remove_images.
        """
        query = " ".join(query.split())
        if not query:
            raise InvalidInputError("The query is empty; describe what the images should show.")
        self._raise_if_empty()  # before the model is needed
        flt = confine_where(self.sandbox, where)
        if expand:
            from img_agent.agent.rag import rag_search  # imports the openai client: not at server start

            k_eff = k if k is not None else self.engine.settings.topk
            # collapsing folds within the fused list: fetch more so k different pictures usually remain
            k_rag = min(k_eff * 3, MAX_TOPK) if collapse_duplicates else k_eff
            rag = rag_search(self.images, self.llm, query, k_rag, expand=True, explain=False, filter=flt)
            hits = self.engine.collapse_hits(rag.results, k=k_eff) if collapse_duplicates else rag.results
            result = SearchResult(query=query, hits=_tool_hits(hits), queries=rag.expanded_queries, notes=list(rag.notes))
        else:
            found = self.engine.search_text(query, k=k, filter=flt, collapse=collapse_duplicates)
            result = SearchResult(query=query, hits=_tool_hits(found), queries=[query])
        return self._checked(result, flt)

    @tool(title="Search images by example image", read_only=True, destructive=False, idempotent=True, shows_images=True)
    def search_by_image(
        self,
        *,
        path: Annotated[str | None, Field(
            max_length=4096,
            description="An image file on the server's machine, inside the allowed folders (absolute, or "
            "relative to an allowed folder).",
        )] = None,
        image_base64: Annotated[str | None, Field(
            max_length=MAX_INLINE_IMAGE_CHARS,
            description=f"The image itself, base64-encoded JPEG/PNG/WebP (a data: URL is accepted), at most "
            f"{MAX_INLINE_IMAGE_BYTES // (1024 * 1024)} MiB decoded.",
        )] = None,
        image_id: Annotated[int | None, Field(
            ge=0, description="The id of an indexed image (from earlier results): find images like it, excluding itself."
        )] = None,
        k: TopK = None,
        where: Where = None,
        collapse_duplicates: CollapseDuplicates = False,
    ) -> SearchResult:
        """Find indexed images that look like an example image (CLIP), best first.

        Give exactly one of path, image_base64 or image_id. Hits carry id, path, cosine score and catalog
        metadata, as in search_by_text.
        """
        given = [name for name, value in (("path", path), ("image_base64", image_base64), ("image_id", image_id)) if value is not None]
        if len(given) != 1:
            detail = "none was given" if not given else f"got {', '.join(given)}"
            raise InvalidInputError(f"Give exactly one of path, image_base64 or image_id ({detail}).")
        flt = confine_where(self.sandbox, where)
        if path is not None:
            resolved, data = self.sandbox.read_file(path)
            query = f"image file {resolved}"
            hits = self._search_image(data, k, flt, collapse_duplicates, what=repr(path))
        elif image_base64 is not None:
            data = self.sandbox.decode_base64(image_base64)
            query = f"inline image ({len(data):,} bytes)"
            hits = self._search_image(data, k, flt, collapse_duplicates, what="image_base64")
        else:
            assert image_id is not None  # narrowed by the count above
            hits = self.engine.search_similar(image_id, k=k, filter=flt, collapse=collapse_duplicates)
            query = f"image id {image_id}"
        return self._checked(SearchResult(query=query, hits=_tool_hits(hits)), flt)

    @tool(title="Answer a question about the images", read_only=True, destructive=False, idempotent=True, uses_llm=True, shows_images=True)
    def ask_about_images(
        self,
        question: Annotated[str, Field(
            min_length=1, max_length=MAX_QUERY_CHARS,
            description="A question the images can answer, e.g. 'Which photos show snow?' or "
            "'What colour is the car in the garage pictures?'.",
        )],
        k: Annotated[int | None, Field(
            ge=1, le=MAX_ANSWER_K, description=f"How many relevant images to retrieve and consider (1-{MAX_ANSWER_K}); null = a few."
        )] = None,
        where: Where = None,
    ) -> AnswerResult:
        """Answer a question from the most relevant indexed images.

        Retrieves the images that best match the question, then has the configured LLM answer from them,
        citing images as [n] (n = the source's rank). Without a configured LLM, answer is null and the
        retrieved images are returned so you can answer yourself.
        """
        from img_agent.agent.qa import (  # imports the openai client: not at start
            DEFAULT_QA_K,
            answer_question,
        )

        flt = confine_where(self.sandbox, where)
        qa = answer_question(self.images, self.llm, question, k if k is not None else DEFAULT_QA_K, filter=flt)
        if not qa.sources:
            self._raise_if_empty()
        records = {record.id: record for record in self.engine.get([source.id for source in qa.sources])}
        sources = [
            AnswerSource(**records[s.id].model_dump(), rank=s.label, score=s.score, cited=s.cited) for s in qa.sources
        ]
        return AnswerResult(
            question=qa.question, answer=qa.answer, llm_used=qa.llm_used, sources=sources,
            searched_queries=qa.searched_queries, notes=list(qa.notes),
        )

    # -- changing the collection ----------------------------------------------------------------

    @tool(title="Add images to the index", read_only=False, destructive=False, idempotent=True, costly=True)
    def add_images(
        self,
        paths: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(
            min_length=1, max_length=MAX_PATHS_PER_CALL,
            description="Image files and/or folders inside the allowed folders (absolute, or relative to an "
            "allowed folder). Folders are searched for .jpg .jpeg .png .gif .bmp .tif .tiff .webp .heic .heif .avif "
            "files.",
        )],
        recursive: Annotated[bool, Field(description="Also add images in subfolders of the given folders.")] = True,
        prune: Annotated[bool, Field(
            description="Also remove indexed images under the given folders whose files no longer exist.",
        )] = False,
        wait: Annotated[bool, Field(
            description="Wait until every file is handled (true), or return at once with the job's id and "
            "progress (false) and follow it with index_status.",
        )] = True,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
        cancel: Annotated[threading.Event | None, INJECTED] = None,
    ) -> AddReport:
        """Index image files and folders so they become searchable.

        New and changed files are encoded (this takes a while for thousands of images; progress is
        reported); files already indexed with the same content are counted as unchanged. Files that cannot
        be used (unreadable, not an image, outside the allowed folders) are skipped with a reason, and the
        rest go through. The work runs as a job that goes on if this call is abandoned (a time-out, a
        disconnect): index_status lists it with its progress and final report, and only cancel_job stops
        it. Every image listed as added is searchable.
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

        def work(job_progress: ProgressCallback, job_cancel: threading.Event) -> AddReport:
            self.engine.warm_up()  # a job waits for the model, however long it loads
            # a caller confined to some folders cannot widen what later sessions allow; an unconfined one
            # (the person at the command line) records the folders as indexed roots
            confine = self.sandbox if self.sandbox.confines else None
            report = self.engine.add_paths(inputs, recursive=recursive, remove_missing=prune, progress=job_progress,
                                           cancel=job_cancel, confine=confine)
            return report.model_copy(update={"skipped": skipped + report.skipped})

        job_id = self.jobs.start("add", "add " + ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else ""), work)
        info, report = self.jobs.follow(job_id, wait=wait, progress=progress, cancel=cancel, poll=PROGRESS_POLL_S)
        if isinstance(report, AddReport):  # finished already; a caller that did not wait still gets its job
            return report if wait else report.model_copy(update={"job": info})
        return AddReport(skipped=skipped, job=info)

    @tool(title="Remove images from the index", read_only=False, destructive=True, idempotent=True)
    def remove_images(
        self,
        ids: Annotated[list[int] | None, Field(
            max_length=MAX_IDS_PER_CALL, description="Ids of images to remove (from search results)."
        )] = None,
        paths: Annotated[list[Annotated[str, Field(max_length=4096)]] | None, Field(
            max_length=MAX_IDS_PER_CALL,
            description="Indexed file paths to remove; a folder path removes every image indexed under it.",
        )] = None,
        dry_run: Annotated[bool, Field(
            description="Only list what would be removed (in 'removed'), removing nothing."
        )] = False,
    ) -> RemoveReport:
        """Remove images from the index (the files themselves are never touched).

        Removed images disappear from the next search at once; their space is reclaimed by rebuild_index.
        Give ids, paths, or both; only images inside the allowed folders can be removed. With dry_run,
        nothing is removed and the report lists what would be.
        """
        if not ids and not paths:
            raise InvalidInputError("Give the ids and/or paths of the images to remove.")
        ids, resolved = removal_targets(self.engine, self.sandbox, ids or (), paths or ())
        return self.engine.remove(ids=ids, paths=resolved, dry_run=dry_run)

    # -- helpers -------------------------------------------------------------------------------

    def thumbnail(self, image_id: int, max_side: int = 256, quality: int = 80) -> bytes:
        """A JPEG thumbnail of an indexed image, read inside the allowed folders (see :class:`ConfinedImages`)."""
        return self.images.thumbnail(image_id, max_side=max_side, quality=quality)

    def _search_image(self, data: bytes, k: int | None, flt: SearchFilter | None, collapse: bool, *,
                      what: str) -> list[SearchHit]:
        try:
            with query_image_guard(data, self.engine.settings):
                return self.engine.search_image(data, k=k, filter=flt, collapse=collapse)
        except ImageDecodeError as exc:
            reason = str(exc).rstrip(". ")
            raise ImageDecodeError(f"{what} cannot be used as a query image ({reason}). Give a JPEG, PNG or WebP image.") from exc

    def _checked(self, result: SearchResult, flt: SearchFilter | None) -> SearchResult:
        """An empty result on an empty index is an error the model can act on; a filter that matched
        nothing gets a note."""
        if not result.hits:
            self._raise_if_empty()
            if flt is not None:
                result.notes.append(NO_MATCH_NOTE)
        return result

    def _raise_if_empty(self) -> None:
        if self.engine.live_count == 0:
            raise InvalidInputError(EMPTY_INDEX_MESSAGE)


def _tool_hits(hits: Sequence[SearchHit]) -> list[ToolHit]:
    return [ToolHit.model_validate(hit.model_dump()) for hit in hits]


# ---------------------------------------------------------------------------------- specs

TOOL_SPECS: tuple[ToolSpec, ...] = specs_of(ImageTools)
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
