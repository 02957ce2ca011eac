"""Images removed by request stay out of the index when their folder is walked again.

A removal by request (``remove`` by id or path) records the removed paths in the catalog's
``excluded_paths``; pruning vanished files and replacing changed ones record nothing. A later add
skips an excluded file it found by walking a folder (or reported by a folder watch), with a reason
that says how to bring it back; naming the file itself as an input readmits and adds it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from img_agent.results import SkippedItem

if TYPE_CHECKING:
    from img_agent.index.catalog import Catalog

EXCLUDED_REASON = "removed from the index earlier; name the file itself to add it back"


class Exclusions:
    """The excluded paths one add consults; ``inputs`` named explicitly are readmitted unless ``walked``."""

    def __init__(self, catalog: Catalog, inputs: Iterable[Path], *, walked: bool) -> None:
        self._catalog = catalog
        self._paths = catalog.excluded_paths()
        self._given = {os.path.realpath(p) for p in inputs} if self._paths and not walked else set()
        self._readmitted: list[str] = []

    def skip(self, path: str) -> SkippedItem | None:
        """The skip for ``path`` when it stays out, else None (an explicitly named one is readmitted)."""
        if path not in self._paths:
            return None
        if path in self._given:
            self._readmitted.append(path)
            return None
        return SkippedItem(path=path, reason=EXCLUDED_REASON)

    def commit(self) -> None:
        """Forget the exclusion of the files that were named explicitly."""
        if self._readmitted:
            self._catalog.readmit(self._readmitted)
            self._readmitted = []
