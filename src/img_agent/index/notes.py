"""Tags and descriptions: the notes kept on catalogued images (table ``image_tags``, column ``images.description``).

The tag rule: a tag is trimmed and its inner whitespace collapsed to one space; it has 1 to
:data:`MAX_TAG_CHARS` characters; its case is kept as first given. Tags compare case-insensitively
(``str.casefold``): one image never holds two tags that differ only in case, so adding ``Beach`` to an
image tagged ``beach`` keeps ``beach``. A description has 1 to :data:`MAX_DESCRIPTION_CHARS`
characters (``None`` clears it).

Every change of many images is one transaction under the store's write lock: it applies to all of
them or to none. Only live images take notes; removed ones are refused. Notes never touch vectors
or the index.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from img_agent.errors import InvalidInputError, NotFoundError
from img_agent.index.failures import read_only
from img_agent.textsafe import one_line

if TYPE_CHECKING:
    import sqlite3

    from img_agent.index.state import State

MAX_TAG_CHARS = 64
"""Longest tag, after trimming and collapsing whitespace."""
MAX_DESCRIPTION_CHARS = 2000
"""Longest description."""
_CHUNK = 900  # ids per SQL statement (SQLite binds at most 999 parameters in old builds)
_INT64 = (-(2**63), 2**63 - 1)


class NoteReport(BaseModel):
    """What a change of tags or descriptions did."""

    changed: list[int] = Field(default_factory=list, description="Ids whose tags or description changed.")
    unchanged: list[int] = Field(
        default_factory=list, description="Ids that already had the asked tags or description (nothing to do)."
    )
    not_found: list[str] = Field(
        default_factory=list,
        description="Ids that name no live image (removed or never indexed), and paths that match no live image.",
    )


class TagCount(BaseModel):
    """One tag and how many live images carry it (spellings that differ only in case count as one)."""

    tag: str = Field(description="The tag, in its most used spelling.")
    count: int = Field(description="Live images carrying it.")


# ---------------------------------------------------------------------------------- the rules


def normalise_tag(raw: object) -> str:
    """``raw`` as a tag: trimmed, inner whitespace collapsed to one space.

    Raises:
        InvalidInputError: not a string, empty, or longer than :data:`MAX_TAG_CHARS` characters.
    """
    if not isinstance(raw, str):
        raise InvalidInputError(f"A tag is text; got {raw!r}.")
    tag = " ".join(raw.split())
    if not tag:
        raise InvalidInputError(f"A tag is empty (got {raw!r}); give 1-{MAX_TAG_CHARS} characters, e.g. 'beach'.")
    if len(tag) > MAX_TAG_CHARS:
        raise InvalidInputError(
            f"The tag '{one_line(tag[:40])}...' has {len(tag)} characters; tags have 1-{MAX_TAG_CHARS}. "
            "Shorten it (a description holds longer text)."
        )
    return tag


def tag_key(tag: str) -> str:
    """What tags are compared by: two tags with the same key are the same tag."""
    return tag.casefold()


def normalise_tags(raw: Iterable[object]) -> list[str]:
    """Each of ``raw`` normalised (:func:`normalise_tag`), repeats (in any case) dropped, the first spelling kept."""
    out: dict[str, str] = {}
    for item in raw:
        tag = normalise_tag(item)
        out.setdefault(tag_key(tag), tag)
    return list(out.values())


def clean_description(text: object) -> str | None:
    """``text`` as a description (outer whitespace trimmed); ``None`` stays ``None`` (it clears).

    Raises:
        InvalidInputError: not a string, empty, or longer than :data:`MAX_DESCRIPTION_CHARS` characters.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise InvalidInputError(f"A description is text; got {type(text).__name__}.")
    cleaned = text.strip()
    if not cleaned:
        raise InvalidInputError("The description is empty; give some text, or clear the description instead.")
    if len(cleaned) > MAX_DESCRIPTION_CHARS:
        raise InvalidInputError(
            f"The description has {len(cleaned):,} characters; at most {MAX_DESCRIPTION_CHARS:,} are kept. Shorten it."
        )
    return cleaned


def _edited(current: list[str], add: list[str], remove: set[str], replace: list[str] | None) -> list[str]:
    """The tags after a change: ``replace`` (or ``current``) without ``remove`` (keys), then ``add`` not yet held."""
    base = replace if replace is not None else current
    kept = {tag_key(t): t for t in base if tag_key(t) not in remove}
    for tag in add:
        kept.setdefault(tag_key(tag), tag)
    return list(kept.values())


def _check_ids(ids: Iterable[object]) -> tuple[list[int], list[str]]:
    """(distinct ids in the int64 range, ascending; the others as text: no image can have them)."""
    inside: set[int] = set()
    outside: list[str] = []
    for raw in ids:
        if isinstance(raw, bool) or not isinstance(raw, numbers.Integral):
            raise InvalidInputError(f"Image ids are integers; got {raw!r}.")
        if _INT64[0] <= int(raw) <= _INT64[1]:
            inside.add(int(raw))
        else:
            outside.append(str(raw))
    return sorted(inside), outside


def _chunks(ids: Sequence[int]) -> Iterable[tuple[str, Sequence[int]]]:
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        yield ",".join("?" * len(chunk)), chunk


def _not_live_error(missing: Sequence[str]) -> NotFoundError:
    shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
    return NotFoundError(
        f"No live image has id {shown} (removed, or never indexed); nothing was changed. Use ids from search "
        "results or 'img-agent status'."
    )


# ---------------------------------------------------------------------------------- the store side


class Notes:
    """The tag and description operations of one open store (see the module docstring)."""

    def __init__(self, state: State) -> None:
        self._state = state

    def _writable(self) -> None:
        if self._state.read_only:
            raise read_only(self._state.settings.data_dir)

    def _live(self, db: sqlite3.Connection, ids: Sequence[int]) -> set[int]:
        live: set[int] = set()
        for marks, chunk in _chunks(ids):
            live.update(r[0] for r in db.execute(
                f"SELECT id FROM images WHERE id IN ({marks}) AND state != 'deleted'", chunk))
        return live

    def _targets(self, db: sqlite3.Connection, ids: Iterable[object], skip_missing: bool) -> tuple[list[int], list[str]]:
        """(the live ids among ``ids``, the rest as text); raises when any is missing unless ``skip_missing``,
        and when none is live."""
        wanted, outside = _check_ids(ids)
        if not wanted and not outside:
            raise InvalidInputError("Give the ids and/or paths of the images to change.")
        live = self._live(db, wanted)
        missing = [str(i) for i in wanted if i not in live] + outside
        if (missing and not skip_missing) or not live:
            raise _not_live_error(missing)
        return [i for i in wanted if i in live], missing

    def edit_tags(self, ids: Iterable[object], *, add: Iterable[object] = (), remove: Iterable[object] = (),
                  replace: Iterable[object] | None = None, skip_missing: bool = False) -> NoteReport:
        """Change the tags of many images at once: ``replace`` them (when given) by exactly these, take away
        ``remove`` (in any case), then add ``add`` where the image does not hold the tag in any case.

        Raises:
            InvalidInputError: a bad tag, or nothing to do.
            NotFoundError: an id names no live image (nothing changed); with ``skip_missing`` such ids
                are reported in ``not_found`` instead, unless none is live.
            StoreReadOnlyError: the store is read-only.
        """
        add_tags = normalise_tags(add)
        remove_keys = {tag_key(t) for t in normalise_tags(remove)}
        replace_tags = normalise_tags(replace) if replace is not None else None
        if not add_tags and not remove_keys and replace_tags is None:
            raise InvalidInputError("Nothing to do: give tags to add, to remove, or to set.")
        self._writable()
        report = NoteReport()
        with self._state.write_lock, self._state.catalog.transaction() as db:
            targets, report.not_found = self._targets(db, ids, skip_missing)
            current: dict[int, list[str]] = {i: [] for i in targets}
            for marks, chunk in _chunks(targets):
                for image_id, tag in db.execute(
                        f"SELECT id, tag FROM image_tags WHERE id IN ({marks}) ORDER BY id, tag", chunk):
                    current[image_id].append(tag)
            gone: list[tuple[int, str]] = []
            new: list[tuple[int, str]] = []
            for image_id in targets:
                before = current[image_id]
                after = _edited(before, add_tags, remove_keys, replace_tags)
                if set(after) == set(before):
                    report.unchanged.append(image_id)
                    continue
                report.changed.append(image_id)
                gone += [(image_id, t) for t in before if t not in after]
                new += [(image_id, t) for t in after if t not in before]
            db.executemany("DELETE FROM image_tags WHERE id = ? AND tag = ?", gone)
            db.executemany("INSERT INTO image_tags(id, tag) VALUES (?, ?)", new)
        self._refreshed(report.changed)
        return report

    def set_description(self, ids: Iterable[object], text: str | None, *, skip_missing: bool = False) -> NoteReport:
        """Give many images the description ``text`` (``None`` clears it); see :meth:`edit_tags` for the errors."""
        description = clean_description(text)
        self._writable()
        report = NoteReport()
        with self._state.write_lock, self._state.catalog.transaction() as db:
            targets, report.not_found = self._targets(db, ids, skip_missing)
            for marks, chunk in _chunks(targets):
                for image_id, old in db.execute(f"SELECT id, description FROM images WHERE id IN ({marks})", chunk):
                    (report.unchanged if old == description else report.changed).append(image_id)
            report.changed.sort()
            report.unchanged.sort()
            db.executemany("UPDATE images SET description = ? WHERE id = ?", [(description, i) for i in report.changed])
        self._refreshed(report.changed)
        return report

    def _refreshed(self, ids: list[int]) -> None:
        """Tell the external vector store (whose filters read tags and descriptions) about changed rows."""
        if self._state.external is not None and ids:
            with self._state.write_lock:
                self._state.external.refreshed(ids)

    def tag_counts(self) -> list[TagCount]:
        """Every tag of a live image with its number of images: most used first, then by name."""
        rows = self._state.catalog.query(
            "SELECT t.tag, count(*) FROM image_tags t JOIN images i ON i.id = t.id WHERE i.state != 'deleted' "
            "GROUP BY t.tag")
        spellings: dict[str, list[tuple[int, str]]] = {}
        for tag, count in rows:
            spellings.setdefault(tag_key(tag), []).append((int(count), tag))
        counts = [TagCount(tag=min(found, key=lambda s: (-s[0], s[1]))[1], count=sum(c for c, _ in found))
                  for found in spellings.values()]
        return sorted(counts, key=lambda c: (-c.count, tag_key(c.tag), c.tag))

    def to_describe(self, among: Sequence[int] | None = None, *, limit: int | None = None,
                    overwrite: bool = False) -> list[int]:
        """Live ids without a description (every live id with ``overwrite``), ascending, at most ``limit``;
        only those in ``among`` when given."""
        where = "state != 'deleted'" + ("" if overwrite else " AND (description IS NULL OR description = '')")
        catalog = self._state.catalog
        if among is None:
            cap = " LIMIT ?" if limit is not None else ""
            rows = catalog.query(f"SELECT id FROM images WHERE {where} ORDER BY id{cap}",
                                 (limit,) if limit is not None else ())
            return [r[0] for r in rows]
        wanted, _ = _check_ids(among)
        found: list[int] = []
        for marks, chunk in _chunks(wanted):
            found += [r[0] for r in catalog.query(f"SELECT id FROM images WHERE {where} AND id IN ({marks})", chunk)]
        found.sort()
        return found if limit is None else found[:limit]

    def ids_for_paths(self, paths: Iterable[str | Path]) -> tuple[list[int], list[str]]:
        """(live ids of the images at or under ``paths``, ascending; the paths that match none).

        A file path names its image; a folder path every image indexed under it.
        """
        catalog = self._state.catalog
        ids: set[int] = set()
        not_found: list[str] = []
        for raw in paths:
            under = catalog.live_ids_at(str(Path(raw).expanduser().resolve()))
            if under:
                ids.update(under)
            else:
                not_found.append(str(raw))
        return sorted(ids), not_found
