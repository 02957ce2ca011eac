"""Reading only a photo's EXIF facts from its file: for images indexed before the facts were recorded."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from img_agent.embed.decode import read_photo_meta
from img_agent.embed.images import open_regular
from img_agent.errors import ImageDecodeError
from img_agent.results import PhotoMeta

__all__ = ["read_photo"]

logger = logging.getLogger(__name__)


def read_photo(path: str | os.PathLike[str], *, max_bytes: int, max_pixels: int) -> PhotoMeta | None:
    """The EXIF facts of an image file, read from its header (no pixel decoded, the file not hashed).

    None when the file cannot be read now (gone, no permission, not a regular file, empty or over
    ``max_bytes``): try again later. A readable file that is not an image has no facts (all None).
    """
    p = Path(path)
    try:
        fd = open_regular(p)
    except ImageDecodeError as exc:
        logger.debug("cannot read photo metadata of %s: %s", p, exc)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= max_bytes:
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = -1  # owned by fh now
            return read_photo_meta(fh, max_pixels=max_pixels)
    except OSError as exc:
        logger.debug("cannot read photo metadata of %s: %s", p, exc.strerror or exc)
        return None
    finally:
        if fd >= 0:
            os.close(fd)
