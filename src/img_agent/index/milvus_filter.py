"""Search filters as Milvus boolean expressions, evaluated inside the ANN search.

:func:`expression` gives the expression of a checked :class:`~img_agent.results.SearchFilter` with
the meaning :mod:`~img_agent.index.filters` gives it in SQL, over the fields :func:`entity` stores:
paths and text compared lower-cased through ``*_folded`` copies, tags by their filter key, formats
upper-cased, times and GPS as nullable doubles (a missing value fails every comparison, as NULL
does in SQL). A condition Milvus cannot express exactly (a glob with a character class, a value
holding a backslash) makes :func:`expression` return None, and the caller answers from the catalog
instead. Values are always escaped: nothing from a filter is read as expression syntax.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from img_agent.index import filters
from img_agent.index.filters import Checked, fold, normal_tag
from img_agent.index.rows import PHOTO_FIELDS

MAX_TAGS = 256
"""Tags per image the collection's array field holds (more are kept in the catalog, not filterable here)."""
MAX_TEXT = 65_535
"""Longest path or description the collection stores (Milvus' VARCHAR limit, in bytes)."""


class Inexpressible(Exception):
    """A filter value that Milvus cannot compare exactly (the search is answered from the catalog)."""


def _string(value: str) -> str:
    """``value`` as a Milvus string literal."""
    if "\\" in value:
        raise Inexpressible(value)
    return '"' + value.replace('"', '\\"') + '"'


def _like(pattern: Sequence[tuple[str, bool]]) -> str:
    """A ``like`` pattern from (text, is_wildcard) pieces: literal ``%`` and ``_`` escaped."""
    out = []
    for text, wild in pattern:
        if wild:
            out.append(text)
        elif "\\" in text:
            raise Inexpressible(text)
        else:
            out.append(text.replace("%", "\\\\%").replace("_", "\\\\_"))
    return '"' + "".join(out).replace('"', '\\"') + '"'


def _strings(values: Sequence[str]) -> str:
    return "[" + ", ".join(_string(v) for v in values) + "]"


def _glob(pattern: str, fold_case: bool) -> str | None:
    """A glob with only ``*`` and ``?`` as a ``like`` pattern; raises :class:`Inexpressible` for classes."""
    if "[" in pattern:
        raise Inexpressible(pattern)
    text = fold(pattern) if fold_case else pattern
    return _like([(c, False) if c not in "*?" else ("%" if c == "*" else "_", True) for c in text])


def expression(checked: Checked, exclude: Sequence[int] = ()) -> str | None:
    """The Milvus expression of ``checked`` leaving out ``exclude`` ("" when there is no condition); None when
    a condition cannot be expressed exactly."""
    try:
        return " and ".join(_terms(checked, exclude))
    except Inexpressible:
        return None


def exclusion(exclude: Sequence[int]) -> str:
    """The expression leaving out the ids ``exclude`` ("" when none)."""
    return f"id not in [{', '.join(str(int(i)) for i in exclude)}]" if len(exclude) else ""


def _terms(checked: Checked, exclude: Sequence[int]) -> list[str]:
    flt = checked.flt
    terms = [exclusion(exclude)] if len(exclude) else []
    if checked.folder is not None:
        terms.append(f"path like {_like([(checked.folder.rstrip('/') + '/', False), ('%', True)])}")
    if flt.glob is not None:
        fold_case = not flt.glob_case_sensitive
        terms.append(f"{'path_folded' if fold_case else 'path'} like {_glob(flt.glob, fold_case)}")
    if checked.formats:
        aliases = [alias for alias, name in filters._FORMAT_ALIASES.items() if name in checked.formats]
        terms.append(f"format in {_strings([*checked.formats, *aliases])}")
    for column, (low, high) in checked.times.items():
        if low is not None:
            terms.append(f"{column} >= {low.value!r}")
        if high is not None:
            terms.append(f"{column} {'<=' if high.inclusive else '<'} {high.value!r}")
    for needle, column in ((flt.camera, "camera_folded"), (flt.description, "description_folded")):
        if needle is not None:
            terms.append(f"{column} like {_like([('%', True), (fold(needle.strip()), False), ('%', True)])}")
    if flt.has_gps is not None:
        terms.append("(gps_lat is not null and gps_lon is not null)" if flt.has_gps
                     else "(gps_lat is null or gps_lon is null)")
    if flt.bbox is not None:
        box = flt.bbox
        terms.append(f"gps_lat >= {box.min_lat!r} and gps_lat <= {box.max_lat!r}")
        joint = "and" if box.min_lon <= box.max_lon else "or"  # across the antimeridian: east of min or west of max
        terms.append(f"(gps_lon >= {box.min_lon!r} {joint} gps_lon <= {box.max_lon!r})")
    for name, column in (("min_width", "width"), ("min_height", "height")):
        if getattr(flt, name) is not None:
            terms.append(f"{column} >= {int(getattr(flt, name))}")
    if flt.tags_any:
        terms.append(f"array_contains_any(tags, {_strings(sorted({normal_tag(t) for t in flt.tags_any}))})")
    if flt.tags_all:
        terms.append(f"array_contains_all(tags, {_strings(sorted({normal_tag(t) for t in flt.tags_all}))})")
    if flt.tags_none:
        terms.append(f"not array_contains_any(tags, {_strings(sorted({normal_tag(t) for t in flt.tags_none}))})")
    return terms


def entity(row: tuple, vector: np.ndarray) -> dict:
    """The collection entity of a catalog row selected as :data:`~img_agent.index.rows.RECORD_COLUMNS`."""
    import json

    photo = dict(zip(PHOTO_FIELDS, row[11:], strict=True))
    make, model = photo["camera_make"], photo["camera_model"]
    tags = sorted({normal_tag(t) for t in json.loads(row[10] or "[]")})[:MAX_TAGS]
    return {
        "id": int(row[0]), "vector": vector.tolist(),
        "path": _clip(row[1]), "path_folded": _clip(fold(row[1])),
        "sha256": row[2] or "", "size": int(row[3] or 0), "width": int(row[4] or 0), "height": int(row[5] or 0),
        "format": (row[6] or "").upper(), "mtime": float(row[7] or 0.0),
        "taken_at": photo["taken_at"], "gps_lat": photo["gps_lat"], "gps_lon": photo["gps_lon"],
        "camera_folded": _clip(fold(f"{make or ''} {model or ''}")),
        "description_folded": _clip(fold(row[9] or "")), "tags": tags,
    }


def _clip(text: str) -> str:
    """``text`` cut to :data:`MAX_TEXT` UTF-8 bytes (whole characters)."""
    data = text.encode("utf-8")
    return text if len(data) <= MAX_TEXT else data[:MAX_TEXT].decode("utf-8", "ignore")
