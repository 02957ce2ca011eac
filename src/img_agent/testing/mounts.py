"""Small real file systems for fault tests: a size-limited tmpfs (a disk that fills) and its read-only remount.

Mounting needs root (or CAP_SYS_ADMIN). Where it cannot be had, :func:`tmpfs` raises
:class:`unittest.SkipTest`, which test runners report as a skip with the reason: a test that needs
a real full or read-only disk never passes without one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import unittest
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` (e.g. ``"2m"``) mounted at ``path`` (created) for the block; unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        raise unittest.SkipTest("needs root to mount a tmpfs (the real way to fill a disk or make it read-only)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise unittest.SkipTest(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    """Make the tmpfs at ``path`` read-only (as a read-only mount of a user's disk is)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
