"""The tool that applies file changes to the index: what ``img-agent watch`` sends after files change.

:class:`WatchTools` is a mixin of :class:`~img_agent.tools.image_tools.ImageTools`; the rules live in
:func:`img_agent.index.watch.apply_changes`. Every path must lie inside the sandbox (it need not exist:
a vanished file is exactly what gets dropped).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from img_agent.index.watch import apply_changes
from img_agent.results import AddReport, ProgressCallback
from img_agent.tools.limits import MAX_PATHS_PER_CALL
from img_agent.tools.spec import INJECTED, tool

if TYPE_CHECKING:
    from img_agent.index.engine import Engine
    from img_agent.tools.sandbox import Sandbox


class WatchTools:
    """Mixin: :meth:`sync_paths` over ``self.engine``, confined to ``self.sandbox``."""

    if TYPE_CHECKING:
        engine: Engine
        sandbox: Sandbox

    @tool(title="Update the index for changed files", read_only=False, destructive=True, idempotent=True)
    def sync_paths(
        self,
        paths: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(
            min_length=1, max_length=MAX_PATHS_PER_CALL,
            description="Image files and/or folders inside the allowed folders that were created, changed, "
            "moved or deleted (absolute, or relative to the first allowed folder); they need not exist any more.",
        )],
        progress: Annotated[ProgressCallback | None, INJECTED] = None,
        cancel: Annotated[threading.Event | None, INJECTED] = None,
    ) -> AddReport:
        """Bring the index in line with files and folders that changed on disk.

        A path that no longer exists is dropped from the index, with every image indexed under it (listed in
        removed_missing; a file that comes back later is added again). A path that exists is added like the
        files of an indexed folder: new and changed images are indexed, unchanged ones counted, unusable ones
        skipped with a reason, and an image removed on request (remove_images) stays out: add_images with the
        file itself brings it back. Removals happen first, so a renamed file is indexed under its new path.
        """
        confined = [str(self.sandbox.confine(raw)) for raw in paths]  # refuses the call if one is outside
        self.engine.warm_up()
        confine = self.sandbox if self.sandbox.confines else None
        return apply_changes(self.engine, confined, confine=confine, progress=progress, cancel=cancel)
