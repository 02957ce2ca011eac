"""The search filter flags every searching command shares, and the :class:`SearchFilter` they make."""

from __future__ import annotations

import argparse
import os
from typing import Any

from pydantic import ValidationError

from img_agent.errors import InvalidInputError
from img_agent.results import SearchFilter

_WHEN = "an ISO 8601 date (that whole day), a date-time (UTC unless it has an offset) or Unix seconds"


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the filter flags (all conditions given must hold) to ``parser``."""
    g = parser.add_argument_group("filters (every one given must hold)")
    g.add_argument("--folder", metavar="DIR",
                   help="only images in this folder or below it (whole path components; relative to the current "
                   "directory)")
    g.add_argument("--glob", metavar="PATTERN",
                   help="only paths matching this glob ('*' spans '/', case-insensitive), e.g. '*/2024/*.jpg'")
    g.add_argument("--case-sensitive-glob", action="store_true", help="match --glob with case distinguished")
    g.add_argument("--format", dest="formats", action="append", metavar="FORMAT",
                   help="only this image format, e.g. JPEG, PNG, jpg (repeat for several)")
    for what, done in (("taken", "taken (EXIF)"), ("modified", "modified (file time)")):
        g.add_argument(f"--{what}-after", metavar="WHEN", help=f"only images {done} at or after WHEN: {_WHEN}")
        g.add_argument(f"--{what}-before", metavar="WHEN", help=f"only images {done} at or before WHEN")
    g.add_argument("--camera", metavar="TEXT", help="only photos whose camera 'make model' contains TEXT (any case)")
    g.add_argument("--has-gps", action=argparse.BooleanOptionalAction, default=None,
                   help="only photos with (--has-gps) or without (--no-has-gps) a GPS position")
    g.add_argument("--bbox", metavar="MIN_LAT,MIN_LON,MAX_LAT,MAX_LON",
                   help="only photos taken inside this box (degrees; write --bbox=-10,170,10,-170 when it starts "
                   "with '-'; MIN_LON > MAX_LON crosses the antimeridian)")
    g.add_argument("--min-width", type=int, metavar="PX", help="only images at least PX pixels wide")
    g.add_argument("--min-height", type=int, metavar="PX", help="only images at least PX pixels high")
    g.add_argument("--tag", dest="tags_any", action="append", metavar="TAG",
                   help="only images with this tag, or with any of the tags given (repeatable; any case)")
    g.add_argument("--all-tags", dest="tags_all", action="append", metavar="TAG",
                   help="only images carrying this tag too (repeatable: all of them)")
    g.add_argument("--without-tag", dest="tags_none", action="append", metavar="TAG",
                   help="leave out images with this tag (repeatable)")
    g.add_argument("--description", metavar="TEXT", help="only images whose description contains TEXT (any case)")
    g.add_argument("--min-score", type=float, metavar="S", help="drop results scoring below S (cosine, -1..1)")


def filter_from_args(args: argparse.Namespace) -> SearchFilter | None:
    """The filter the flags of :func:`add_filter_arguments` ask for, checked; None when none is given.

    Raises:
        InvalidInputError: a bad value (date, box, number), with what is accepted.
    """
    from img_agent.index.filters import check

    folder = getattr(args, "folder", None)
    conditions: dict[str, Any] = {
        name: getattr(args, name, None)
        for name in ("glob", "formats", "taken_after", "taken_before", "modified_after", "modified_before", "camera",
                     "has_gps", "min_width", "min_height", "tags_any", "tags_all", "tags_none", "description",
                     "min_score")
    }
    conditions["folder"] = os.path.realpath(os.path.expanduser(folder)) if folder else None
    conditions["glob_case_sensitive"] = bool(getattr(args, "case_sensitive_glob", False)) or None
    conditions["bbox"] = _bbox(args.bbox) if getattr(args, "bbox", None) else None
    try:
        flt = SearchFilter.of(**conditions)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise InvalidInputError(f"Bad filter flag value: {problems}.") from None
    if flt is not None:
        check(flt)
    return flt


def _bbox(text: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise InvalidInputError(f"--bbox needs four numbers MIN_LAT,MIN_LON,MAX_LAT,MAX_LON (degrees), e.g. "
                                f"--bbox=45.8,5.9,47.8,10.5; got {text!r}.")
    return values


def where_argument(flt: SearchFilter | None) -> dict[str, Any] | None:
    """``flt`` as the ``where`` argument of a search tool (JSON data)."""
    return flt.model_dump(mode="json", exclude_none=True) if flt is not None else None
