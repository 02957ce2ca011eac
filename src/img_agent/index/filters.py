"""Search filters as SQL: the ids of the live images a :class:`~img_agent.results.SearchFilter` allows.

Every condition becomes one parameterised term of a single ``SELECT id FROM images WHERE ...`` (values
are always bound, never pasted into the text), so a filter over a million rows runs in SQLite's C code
in one pass; the search then applies the ids as a bitmap inside the index search.

Semantics, all conditions ANDed:

- ``folder``: the folder and everything below it, by whole components (``/x/holiday`` is not a prefix
  of ``/x/holiday_2``); absolute here (the tools and the CLI resolve relative ones).
- ``glob``: fnmatch syntax (``*`` spans ``/``, ``?``, ``[abc]``, ``[!abc]``), translated to SQLite
  ``GLOB`` syntax; case-insensitive by default, comparing lower-cased path and pattern.
- times: ISO 8601 dates (a date alone is that whole day) or date-times (read as UTC without an
  offset, which is how a camera's wall-clock ``taken_at`` is stored) or Unix seconds; both bounds
  are inclusive.
- text (``camera``, ``description``): compared lower-cased; tags by :func:`~img_agent.index.notes.tag_key`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np

from img_agent.errors import InvalidInputError
from img_agent.index.notes import tag_key
from img_agent.results import GeoBox, SearchFilter

FOLD_FUNCTION = "img_agent_lower"
"""Name of the SQL function :func:`fold` is registered as (Unicode lower-casing; SQLite's ``lower`` folds ASCII only)."""

_FORMAT_ALIASES = {"JPG": "JPEG", "TIF": "TIFF"}
_FORMAT_NAME = re.compile(r"^[A-Za-z0-9]{1,16}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RANGE_EXPANDED = 1024
"""Character-class ranges up to this many code points are listed member by member (so each can be folded)."""

Query = Callable[[str, Sequence[object]], list[tuple]]
"""Runs one SQL statement with bound parameters and returns its rows."""


def fold(text: str | None) -> str | None:
    """Lower-cased ``text``, the one case folding every text condition uses."""
    return text.lower() if isinstance(text, str) else text


# ------------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Bound:
    """One side of a time range: ``column >= value`` (``lower``) or ``column <= value`` / ``< value``."""

    value: float
    inclusive: bool = True


def moment(value: object, name: str, *, upper: bool) -> Bound:
    """The bound that ``value`` (a date, date-time or Unix seconds) sets on the ``upper`` or lower side.

    Raises:
        InvalidInputError: not a date, date-time or finite number.
    """
    bad = InvalidInputError(
        f"{name} must be an ISO 8601 date ('2024-06-01', meaning that whole day), a date-time "
        f"('2024-06-01T14:30:00', UTC unless it ends in an offset such as '+02:00' or 'Z') or Unix seconds; "
        f"got {value!r}."
    )
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise bad
        return Bound(float(value))
    if not isinstance(value, str):
        raise bad
    text = value.strip()
    try:
        if _DATE.match(text):
            day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=timezone.utc)
            return Bound((day + timedelta(days=1)).timestamp(), inclusive=False) if upper else Bound(day.timestamp())
        when = datetime.fromisoformat(text)
    except ValueError:
        raise bad from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return Bound(when.timestamp())


def check_bbox(box: GeoBox) -> None:
    """Raises :class:`InvalidInputError` unless ``box`` is a valid latitude/longitude box."""
    values = (box.min_lat, box.min_lon, box.max_lat, box.max_lon)
    if not (all(math.isfinite(v) for v in values) and -90 <= box.min_lat <= box.max_lat <= 90
            and -180 <= box.min_lon <= 180 and -180 <= box.max_lon <= 180):
        raise InvalidInputError(
            "bbox needs latitudes from -90 to 90 with min_lat <= max_lat, and longitudes from -180 to 180 "
            "(min_lon greater than max_lon means a box crossing the antimeridian); got "
            f"min_lat={box.min_lat}, min_lon={box.min_lon}, max_lat={box.max_lat}, max_lon={box.max_lon}."
        )


def canonical_format(name: str) -> str:
    """A format name as the catalog stores it (``"jpg"`` -> ``"JPEG"``).

    Raises:
        InvalidInputError: not a format name.
    """
    text = name.strip().lstrip(".")
    if not _FORMAT_NAME.match(text):
        raise InvalidInputError(f"formats holds {name!r}, which is no image format name; use names such as "
                                "'JPEG', 'PNG', 'WEBP', 'GIF', 'TIFF'.")
    upper = text.upper()
    return _FORMAT_ALIASES.get(upper, upper)


def normal_tag(tag: str) -> str:
    """A tag as filters compare it: trimmed, inner whitespace collapsed, then by the tags' own key (case-folded)."""
    return tag_key(" ".join(tag.split()))


@dataclass(frozen=True)
class Checked:
    """A filter's conditions, checked and parsed."""

    flt: SearchFilter
    folder: str | None
    times: dict[str, tuple[Bound | None, Bound | None]]
    formats: tuple[str, ...]


def check(flt: SearchFilter) -> Checked:
    """``flt`` checked and parsed.

    Raises:
        InvalidInputError: a relative folder, a bad date, a bbox or a score out of range, a negative size,
            a time range whose start is after its end; the message says what is accepted.
    """
    folder = None
    if flt.folder is not None:
        if not os.path.isabs(flt.folder):
            raise InvalidInputError(
                f"folder must be an absolute path here; got {flt.folder!r}. The tools resolve a relative folder "
                "against the allowed folders and the CLI against the current directory.")
        folder = os.path.normpath(flt.folder)
    times: dict[str, tuple[Bound | None, Bound | None]] = {}
    for column, what in (("taken_at", "taken"), ("mtime", "modified")):
        after, before = getattr(flt, f"{what}_after"), getattr(flt, f"{what}_before")
        low = moment(after, f"{what}_after", upper=False) if after is not None else None
        high = moment(before, f"{what}_before", upper=True) if before is not None else None
        if low is not None and high is not None and (low.value > high.value
                                                     or (low.value == high.value and not high.inclusive)):
            raise InvalidInputError(f"{what}_after ({after!r}) is later than {what}_before ({before!r}), so nothing "
                                    "can match; swap them or widen the range.")
        if low is not None or high is not None:
            times[column] = (low, high)
    if flt.bbox is not None:
        check_bbox(flt.bbox)
    for name in ("min_width", "min_height"):
        value = getattr(flt, name)
        if value is not None and value < 0:
            raise InvalidInputError(f"{name} must be 0 or more pixels; got {value}.")
    if flt.min_score is not None and not (math.isfinite(flt.min_score) and -1 <= flt.min_score <= 1):
        raise InvalidInputError(f"min_score is a cosine similarity from -1 to 1; got {flt.min_score}.")
    formats = tuple(dict.fromkeys(canonical_format(f) for f in flt.formats or ()))
    for name in ("tags_any", "tags_all", "tags_none"):
        if any(not normal_tag(tag) for tag in getattr(flt, name) or ()):
            raise InvalidInputError(f"{name} holds an empty tag; give tag names (1-64 characters).")
    return Checked(flt, folder, times, formats)


# ------------------------------------------------------------------------------- globs


def glob_pattern(pattern: str, fold_case: bool) -> str | None:
    """An fnmatch-style glob as an SQLite ``GLOB`` pattern (for a lower-cased path when ``fold_case``);
    None when it can match nothing (an empty character class).

    SQLite's GLOB negates a class with ``^``, fnmatch with ``!``: both are accepted. Literal ``*``, ``?``
    and ``[`` are written as one-member classes.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c in "*?":
            out.append(c)
            continue
        if c != "[":
            out.extend(_literal(ch) for ch in (fold(c) if fold_case else c))
            continue
        j = i
        negate = j < n and pattern[j] in "!^"
        j += negate
        if j < n and pattern[j] == "]":
            j += 1
        close = pattern.find("]", j)
        if close < 0:  # no closing bracket: a literal '['
            out.append("[[]")
            continue
        body, i = pattern[i + negate:close], close + 1
        piece = _char_class(body, negate, fold_case)
        if piece is None:
            return None
        out.append(piece)
    return "".join(out)


def _literal(ch: str) -> str:
    return f"[{ch}]" if ch in "*?[" else ch


def _char_class(body: str, negate: bool, fold_case: bool) -> str | None:
    """One ``[...]`` class in GLOB syntax. Ranges are listed member by member and every member folded, so
    ``[A-Z]`` means the letters of either case; only ranges wider than :data:`_RANGE_EXPANDED` code points
    stay ranges (with their folded ends added)."""
    chars: set[str] = set()
    ranges: list[tuple[str, str]] = []

    def add(ch: str) -> None:
        low = fold(ch) if fold_case else ch
        chars.add(low if len(low) == 1 else ch)

    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            lo, hi = body[k], body[k + 2]
            k += 3
            if ord(hi) - ord(lo) + 1 > _RANGE_EXPANDED:
                ranges.append((lo, hi))
                if fold_case and len(fold(lo)) == len(fold(hi)) == 1 and fold(lo) <= fold(hi):
                    ranges.append((fold(lo), fold(hi)))
            else:
                for code in range(ord(lo), ord(hi) + 1):
                    add(chr(code))
        else:
            add(body[k])
            k += 1
    if not chars and not ranges:
        return "?" if negate else None
    if not negate and not ranges and len(chars) == 1:
        return _literal(next(iter(chars)))
    # GLOB class syntax: ']' is a member only first, '-' only last, '^' anywhere but first.
    members = ["]"] if "]" in chars else []
    members += sorted(chars - {"]", "-", "^"})
    members += [f"{lo}-{hi}" for lo, hi in ranges]
    if "^" in chars:
        members.append("^")
    if "-" in chars:
        members.append("-") if members else members.insert(0, "-")
    if members[0] == "^":  # only '^' and '-': a leading '-' is a member too
        members.reverse()
    return "[" + ("^" if negate else "") + "".join(members) + "]"


# ------------------------------------------------------------------------------- SQL


def _folded(column: str, needle: str) -> str:
    """``column`` lower-cased in SQL: SQLite's own ``lower`` (C speed) when the needle is ASCII, since then only
    ASCII letters can match its letters; the registered Unicode :func:`fold` otherwise."""
    return f"lower({column})" if needle.isascii() else f"{FOLD_FUNCTION}({column})"


def where_clause(checked: Checked, stored_tags: Callable[[], list[str]]) -> tuple[str, list[object]]:
    """The ``WHERE`` condition (live images only) and its parameters; ``stored_tags`` lists the distinct tags
    in the catalog (asked only when a tag condition is set)."""
    flt = checked.flt
    terms = ["state != 'deleted'"]
    params: list[object] = []
    if checked.folder is not None:
        prefix = checked.folder.rstrip("/") + "/"
        terms.append("substr(path, 1, ?) = ?")
        params += [len(prefix), prefix]
    if flt.glob is not None:
        # One GLOB over the lower-cased path in the same statement: SQLite's C matcher, and no row crosses
        # into Python. fnmatch in Python would first fetch every candidate path (over 1M rows about twice
        # the time). Character classes are rewritten member by member, so folding cannot break a range.
        pattern = glob_pattern(flt.glob, fold_case=not flt.glob_case_sensitive)
        if pattern is None:
            terms.append("0")
        else:
            column = "path" if flt.glob_case_sensitive else _folded("path", flt.glob)
            terms.append(f"{column} GLOB ?")
            params.append(pattern)
    if checked.formats:
        wanted = [*checked.formats, *(alias for alias, name in _FORMAT_ALIASES.items() if name in checked.formats)]
        terms.append(f"upper(format) IN ({','.join('?' * len(wanted))})")
        params += wanted
    for column, (low, high) in checked.times.items():
        if low is not None:
            terms.append(f"{column} >= ?")
            params.append(low.value)
        if high is not None:
            terms.append(f"{column} {'<=' if high.inclusive else '<'} ?")
            params.append(high.value)
    for needle, column in ((flt.camera, "coalesce(camera_make, '') || ' ' || coalesce(camera_model, '')"),
                           (flt.description, "coalesce(description, '')")):
        if needle is not None:
            terms.append(f"instr({_folded(column, needle)}, ?) > 0")
            params.append(fold(needle.strip()))
    if flt.has_gps is not None:
        terms.append("gps_lat IS NOT NULL AND gps_lon IS NOT NULL" if flt.has_gps else "(gps_lat IS NULL OR gps_lon IS NULL)")
    if flt.bbox is not None:
        box = flt.bbox
        terms.append("gps_lat BETWEEN ? AND ?")
        params += [box.min_lat, box.max_lat]
        if box.min_lon <= box.max_lon:
            terms.append("gps_lon BETWEEN ? AND ?")
        else:  # across the antimeridian: east of min_lon or west of max_lon
            terms.append("(gps_lon >= ? OR gps_lon <= ?)")
        params += [box.min_lon, box.max_lon]
    for name, column in (("min_width", "width"), ("min_height", "height")):
        if getattr(flt, name) is not None:
            terms.append(f"{column} >= ?")
            params.append(getattr(flt, name))
    if flt.tags_any or flt.tags_all or flt.tags_none:
        _tag_terms(flt, stored_tags(), terms, params)
    return " AND ".join(terms), params


def _tag_terms(flt: SearchFilter, stored: list[str], terms: list[str], params: list[object]) -> None:
    """Tag conditions, matched through the stored spellings of each wanted tag (so the tag index is used,
    and case folding is Python's, Unicode included)."""
    spellings: dict[str, list[str]] = {}
    for tag in stored:
        spellings.setdefault(normal_tag(tag), []).append(tag)

    def having(tags: list[str]) -> str | None:
        found = [s for tag in dict.fromkeys(normal_tag(t) for t in tags) for s in spellings.get(tag, ())]
        if not found:
            return None
        params.extend(found)
        return f"id IN (SELECT id FROM image_tags WHERE tag IN ({','.join('?' * len(found))}))"

    if flt.tags_any:
        terms.append(having(flt.tags_any) or "0")
    for tag in flt.tags_all or ():
        terms.append(having([tag]) or "0")
    if flt.tags_none and (term := having(flt.tags_none)) is not None:
        terms.append(f"NOT {term}")


def live_ids(query: Query, flt: SearchFilter) -> np.ndarray:
    """Ids (int64, ascending) of the live images ``flt`` allows; ``query`` runs SQL on the catalog, whose
    connection has :func:`fold` registered as :data:`FOLD_FUNCTION`.

    Raises:
        InvalidInputError: see :func:`check`.
    """
    checked = check(flt)
    where, params = where_clause(checked, lambda: [r[0] for r in query("SELECT DISTINCT tag FROM image_tags", ())])
    rows = query(f"SELECT id FROM images WHERE {where} ORDER BY id", params)
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
