"""Indexing on a Ray cluster: the files of an add encoded by :func:`~img_agent.embed.ray_encode.encode_on_ray`.

The driver (this process) walks the folders and decides what is new by path, size and mtime, as
local indexing does; Ray reads, decodes and encodes the rest in parallel; the driver then sorts each
returned batch out against the catalog by content hash (a file whose content is already indexed is
counted unchanged or skipped as a duplicate) and commits the new rows through the usual durable
path. A restarted job therefore finds what an earlier run committed and encodes only the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from img_agent.config import Settings
from img_agent.results import FileFacts, ProgressCallback, SkippedItem

if TYPE_CHECKING:
    from img_agent.embed.encoder import ClipEncoder
    from img_agent.embed.pipeline import Encoded
    from img_agent.index.ingest import Unchanged


@dataclass(frozen=True, slots=True)
class RayCluster:
    """Where an add encodes on Ray: ``address`` None starts a local Ray (or uses the one this process is
    connected to), else a cluster (``"auto"``, ``"ray://head:10001"``); ``actors`` encoder actors (None:
    one per GPU of the cluster, else one per node)."""

    address: str | None = None
    actors: int | None = None


Known = Callable[[FileFacts, dict[str, str]], "Unchanged | SkippedItem | None"]
"""Decides a file whose content is known (see ``Ingest._known``); None for new content."""


def sorted_on_ray(paths: list[Path], encoder: ClipEncoder, settings: Settings, ray: RayCluster, known: Known,
                  progress: ProgressCallback | None,
                  cancel: threading.Event | None) -> Iterator[Encoded | Unchanged | SkippedItem]:
    """The files encoded on Ray, as they arrive: new content in :class:`Encoded` batches, the rest decided by
    ``known`` (unchanged, or a duplicate skip), bad files as the skips local indexing gives."""
    from img_agent.embed.pipeline import Encoded
    from img_agent.embed.ray_encode import encode_on_ray

    s = settings
    first_with: dict[str, str] = {}
    for out in encode_on_ray(paths, model=encoder.name, pretrained=encoder.pretrained, address=ray.address,
                             batch_size=s.batch_size, max_bytes=s.max_file_bytes, max_pixels=s.max_image_pixels,
                             image_size=encoder.image_size, inference=s.inference, actors=ray.actors,
                             progress=progress, cancel=cancel):
        if isinstance(out, SkippedItem):
            yield out
            continue
        new = []
        for i, facts in enumerate(out.files):
            decided = known(facts, first_with)
            if decided is None:
                new.append(i)
            else:
                yield decided
        if new:
            yield Encoded([out.files[i] for i in new], out.vectors[new])
