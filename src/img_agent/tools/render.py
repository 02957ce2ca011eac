"""The content of an MCP tool result: a plain-text rendering of the result, and thumbnails.

The structured content carries every field; the text is what a model reads when its client shows
it only the text, so it keeps what matters for the next step (ids, paths, scores, counts, notes,
hints) and stays short. One function per result type, chosen by :func:`render`.
:func:`thumbnail_blocks` adds small JPEGs of the first images a result lists, for a multimodal model.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

from mcp.types import ContentBlock, ImageContent, TextContent
from pydantic import BaseModel

from img_agent.errors import ImgAgentError
from img_agent.results import (
    AddReport,
    IndexStatus,
    MaintenanceReport,
    RemoveReport,
    SearchHit,
    SkippedItem,
)
from img_agent.textsafe import one_line
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.shapes import AnswerResult, SearchResult

MAX_LISTED_SKIPS = 20
THUMBNAIL_QUALITY = 75
MAX_THUMBNAIL_BYTES_TOTAL = 2 * 1024 * 1024
"""Thumbnails of one result stop once their JPEG bytes add up to this."""


def _hit_line(hit: SearchHit) -> str:
    parts = [f"{hit.rank}. id {hit.id}", f"score {hit.score:.3f}", one_line(hit.path),
             f"{hit.width}x{hit.height} {one_line(hit.format)}"]
    if hit.tags:
        parts.append("tags: " + ", ".join(one_line(tag) for tag in hit.tags))
    if hit.description:
        parts.append(f"description: {one_line(hit.description)}")
    matched = getattr(hit, "matched_queries", None)
    if matched:
        parts.append("matched: " + "; ".join(one_line(repr(q)) for q in matched))
    return "  ".join(parts)


def _notes(notes: Sequence[str]) -> list[str]:
    return [f"Note: {one_line(note)}" for note in notes]


def render_search(result: SearchResult) -> str:
    lines = [f"Query: {one_line(result.query)}"]
    if len(result.queries) > 1:
        lines.append("Also searched: " + "; ".join(one_line(repr(q)) for q in result.queries[1:]))
    if result.hits:
        lines.append(f"{len(result.hits)} image(s), best first (score = cosine similarity, higher is better):")
        lines.extend(_hit_line(hit) for hit in result.hits)
    else:
        lines.append("No images found.")
    return "\n".join(lines + _notes(result.notes))


def render_answer(result: AnswerResult) -> str:
    lines = [f"Question: {one_line(result.question)}"]
    lines.append(f"Answer: {result.answer}" if result.answer is not None else "No answer was generated.")
    if result.sources:
        lines.append("Sources ([n] = rank, as cited):")
        for source in result.sources:
            cited = "  (cited)" if source.cited else ""
            lines.append(f"[{source.rank}] id {source.id}  score {source.score:.3f}  {one_line(source.path)}{cited}")
    return "\n".join(lines + _notes(result.notes))


def _skips(skipped: Sequence[SkippedItem]) -> list[str]:
    lines = [f"  skipped {one_line(item.path)}: {one_line(item.reason)}" for item in skipped[:MAX_LISTED_SKIPS]]
    if len(skipped) > MAX_LISTED_SKIPS:
        lines.append(f"  ... and {len(skipped) - MAX_LISTED_SKIPS} more (see the structured result)")
    return lines


def _ids(ids: Sequence[int], limit: int = 50) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def render_add(report: AddReport) -> str:
    head = (
        f"Added {len(report.added)} image(s), unchanged {report.unchanged}, replaced {len(report.replaced)}, "
        f"skipped {len(report.skipped)}."
    )
    lines = [head]
    if report.added:
        lines.append(f"New ids: {_ids(report.added)}")
    if report.replaced:
        lines.append(f"Retired ids (their files changed): {_ids(report.replaced)}")
    if report.removed_missing:
        lines.append(f"Removed ids (files gone): {_ids(report.removed_missing)}")
    if report.merged:
        lines.append("The buffer was merged into the main index.")
    if report.cancelled:
        lines.append("Cancelled: the images listed as added are indexed and searchable; run again to add the rest.")
    return "\n".join(lines + _skips(report.skipped))


def render_remove(report: RemoveReport) -> str:
    if report.dry_run:
        lines = [f"Dry run: would remove {len(report.removed)} image(s) from the index (nothing removed): "
                 f"{_ids(report.removed)}"]
    else:
        lines = [f"Removed {len(report.removed)} image(s) from the index (files untouched): {_ids(report.removed)}"]
    if report.already_removed:
        lines.append(f"Already removed (nothing to do): {_ids(report.already_removed)}")
    if report.not_found:
        lines.append("Not found: " + ", ".join(one_line(item) for item in report.not_found[:50]))
    return "\n".join(lines)


def render_maintenance(report: MaintenanceReport) -> str:
    trained = ", quantizer trained" if report.retrained else ""
    if report.operation == "merge":
        head = f"merge: moved {report.moved} vector(s) from the buffer into the main index"
    else:
        head = f"rebuild: {report.moved} vector(s) in the new main index, {report.dropped} removed one(s) dropped"
    return f"{head} (index {report.index}{trained}, generation {report.generation}) in {report.seconds:.2f} s."


def render_status(status: IndexStatus) -> str:
    lines = [
        f"Searchable images: {status.live} ({status.main} in the main index, {status.buffer} in the exact buffer)",
        f"Removed, awaiting rebuild: {status.deleted}",
        f"Index: {status.index}; configured: {status.index_string}; generation {status.generation}",
        f"Model: {status.model} ({status.pretrained}), {status.dim}-d",
        f"Data directory: {status.data_dir} ({status.bytes_on_disk / (1024 * 1024):.1f} MiB)",
    ]
    lines.extend(f"Hint: {hint}" for hint in status.hints)
    return "\n".join(lines)


_RENDERERS: dict[type[BaseModel], Callable[[Any], str]] = {
    SearchResult: render_search,
    AnswerResult: render_answer,
    AddReport: render_add,
    RemoveReport: render_remove,
    MaintenanceReport: render_maintenance,
    IndexStatus: render_status,
}


def render(result: BaseModel) -> str:
    """The text rendering of a tool result (JSON for a type without a renderer)."""
    for cls in type(result).__mro__:
        renderer = _RENDERERS.get(cls)
        if renderer is not None:
            return renderer(result)
    return result.model_dump_json(indent=2)


def _shown_images(result: BaseModel) -> Sequence[SearchHit]:
    if isinstance(result, SearchResult):
        return result.hits
    if isinstance(result, AnswerResult):
        return result.sources
    raise TypeError(f"{type(result).__name__} lists no images")


def thumbnail_blocks(tools: ImageTools, result: BaseModel, count: int, max_side: int) -> list[ContentBlock]:
    """Caption + JPEG thumbnail blocks for the first ``count`` images of ``result``.

    An image whose thumbnail cannot be made (file gone, undecodable) gets a one-line note instead;
    thumbnails stop once their bytes add up to :data:`MAX_THUMBNAIL_BYTES_TOTAL`.
    """
    blocks: list[ContentBlock] = []
    total = 0
    for hit in _shown_images(result)[:count]:
        try:
            data = tools.thumbnail(hit.id, max_side=max_side, quality=THUMBNAIL_QUALITY)
        except ImgAgentError as exc:
            blocks.append(TextContent(type="text", text=f"[{hit.rank}] id {hit.id}: no thumbnail ({one_line(exc)})"))
            continue
        if total + len(data) > MAX_THUMBNAIL_BYTES_TOTAL:
            blocks.append(TextContent(type="text", text="(further thumbnails left out: size limit reached)"))
            break
        total += len(data)
        blocks.append(TextContent(type="text", text=f"[{hit.rank}] id {hit.id}: {one_line(hit.path)}"))
        blocks.append(ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type="image/jpeg"))
    return blocks
