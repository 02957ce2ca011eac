"""The store-keeping tools: merging the buffer, rebuilding, status and cancelling jobs.

:class:`MaintenanceTools` is a mixin of :class:`~img_agent.tools.image_tools.ImageTools`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from img_agent.results import IndexStatus, JobInfo, MaintenanceReport, ProgressCallback
from img_agent.tools.limits import MAX_INDEX_STRING_CHARS, PROGRESS_POLL_S
from img_agent.tools.spec import INJECTED, tool

if TYPE_CHECKING:
    from img_agent.index.engine import Engine
    from img_agent.tools.jobs import JobRegistry


class MaintenanceTools:
    """Merge, rebuild, status and job control over ``self.engine`` and ``self.jobs``."""

    engine: Engine
    jobs: JobRegistry

    @tool(title="Merge recently added images into the main index", read_only=False, destructive=False, idempotent=True,
          costly=True)
    def merge_buffer(
        self,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
    ) -> MaintenanceReport:
        """Move recently added images from the exact buffer into the main index, without retraining.

        Searches see every image either way; merging keeps searches fast once many images were added.
        index_status says when a merge is advised. Quick; does nothing when the buffer is empty.
        """
        return self.engine.merge(progress=progress)

    @tool(title="Rebuild the index", read_only=False, destructive=False, idempotent=True, costly=True)
    def rebuild_index(
        self,
        index_string: Annotated[str | None, Field(
            max_length=MAX_INDEX_STRING_CHARS,
            description="Faiss index type to build, e.g. 'Flat', 'IVF1024,SQ8' or 'IVF4096,PQ32x8' (on a store kept "
            "in Milvus: 'FLAT', 'IVF_FLAT', 'IVF_SQ8' or 'HNSW'); null = the configured choice ('auto' picks by "
            "collection size).",
        )] = None,
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
        cancel: Annotated[threading.Event | None, INJECTED] = None,
    ) -> MaintenanceReport:
        """Retrain and rebuild the main index from the stored vectors of all live images.

        Drops removed images for good and re-fits the index to the collection's size. Searches keep working
        meanwhile. Takes seconds to minutes for large collections; index_status says when it is advised.
        """
        return self.engine.rebuild(progress=progress, index_string=index_string or None, cancel=cancel)

    @tool(title="Show index status", read_only=True, destructive=False, idempotent=True)
    def index_status(self) -> IndexStatus:
        """How many images are indexed and searchable, how the index is built, the CLIP model in use, and
        advice (hints) on whether a merge or rebuild is due."""
        return self.engine.status().model_copy(update={"jobs": self.jobs.list()})

    @tool(title="Cancel an indexing job", read_only=False, destructive=False, idempotent=True)
    def cancel_job(
        self,
        job_id: Annotated[str, Field(min_length=1, max_length=100, description="The job's id, e.g. 'add-3'.")],
    ) -> JobInfo:
        """Stop a running indexing job (see index_status) at its next batch. What it added so far stays
        indexed and searchable; its report says so."""
        self.jobs.cancel(job_id)
        info, _ = self.jobs.wait(job_id, timeout=PROGRESS_POLL_S * 10)
        return info
