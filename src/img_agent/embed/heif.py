"""HEIC/HEIF and AVIF: the ISO base media formats phones write, opened through Pillow.

* AVIF is decoded by Pillow itself (Pillow >= 11.3 wheels carry libavif; ``PIL.features.check("avif")``).
* HEIC/HEIF is decoded by pillow-heif, whose opener is registered on the first file that needs it
  (:func:`prepare_open`), never at import: importing the tools or the CLI stays cheap.

pillow-heif turns the pixels by the file's rotation and mirror itself, reports the size as shown,
resets the EXIF orientation to 1 and keeps the stored value as ``info["original_orientation"]``.
"""

from __future__ import annotations

import logging
import threading

__all__ = ["is_heif_or_avif", "missing_decoder", "prepare_open"]

logger = logging.getLogger(__name__)

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

_LOCK = threading.Lock()
_heif_ready: bool | None = None  # None: not tried yet; False: pillow-heif is not installed


def _brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF ``ftyp`` box at the start of ``head``."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return set()
    end = min(int.from_bytes(head[:4], "big"), len(head))
    return {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}


def _register_heif() -> bool:
    global _heif_ready
    with _LOCK:
        if _heif_ready is None:
            try:
                from pillow_heif import register_heif_opener
            except ImportError:
                logger.debug("pillow-heif is not installed; HEIC/HEIF files cannot be decoded")
                _heif_ready = False
            else:
                register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)
                _heif_ready = True
        return _heif_ready


def prepare_open(head: bytes) -> None:
    """Make Pillow able to open the file starting with ``head`` (its first bytes) if that needs a plugin."""
    brands = _brands(head)
    if brands & _HEIF_BRANDS and not brands & _AVIF_BRANDS:  # AVIF stays with Pillow's own plugin
        _register_heif()


def is_heif_or_avif(head: bytes) -> bool:
    """Whether the file starting with ``head`` says it is a HEIF or AVIF image."""
    return bool(_brands(head) & (_HEIF_BRANDS | _AVIF_BRANDS))


def missing_decoder(head: bytes) -> str | None:
    """Why a file starting with ``head`` that Pillow did not recognise cannot be decoded here, or None."""
    brands = _brands(head)
    if brands & _AVIF_BRANDS:
        from PIL import features

        if not features.check("avif"):
            return ("AVIF is not supported by this Pillow build (it needs Pillow >= 11.3 with libavif): "
                    "pip install -U pillow, or convert the file to JPEG or PNG")
    elif brands & _HEIF_BRANDS and not _register_heif():
        return "HEIC needs pillow-heif: pip install pillow-heif, or convert the file to JPEG"
    return None
