"""File access for tools: confined to allowed root folders, with size limits.

A tool never opens a path a model gave it without going through :class:`Sandbox`:

- every path is made absolute and **resolved** (symlinks and ``..``) before it is checked, so a
  symlink inside a root that points elsewhere, or ``root/../etc``, is refused;
- containment is checked component-wise (``/data/img2`` is not inside ``/data/img``);
- relative paths are looked up under each root in turn; ``~`` is expanded;
- a folder walk given the sandbox as its confinement (``Engine.add_paths(..., confine=sandbox)``)
  follows no symbolic link out of the roots;
- only regular files are read, at most ``max_file_bytes`` of them; inline (base64) images are
  limited to ``max_inline_bytes`` after decoding;
- nothing is ever fetched from a URL;
- destructive path arguments (removing images from the index) obey the same roots
  (:meth:`Sandbox.confine`), and so do the files behind indexed images before any byte of them
  leaves the process (:meth:`Sandbox.read_file` on the catalog path).

Refusals raise :class:`~img_agent.errors.AccessDeniedError` naming the allowed roots, so a model can
correct itself; missing files raise :class:`~img_agent.errors.NotFoundError`.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from img_agent.errors import AccessDeniedError, ImageDecodeError, InvalidInputError, NotFoundError

MAX_INLINE_IMAGE_BYTES = 16 * 1024 * 1024
"""Largest base64 image accepted by a tool, in bytes after decoding."""

MAX_INLINE_IMAGE_CHARS = (MAX_INLINE_IMAGE_BYTES + 2) // 3 * 4 + 1024
"""Longest base64 string accepted (the decoded limit, plus room for a data-URL prefix and line breaks)."""

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]+|[A-Za-z0-9_-]+)={0,2}$")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


class Sandbox:
    """The folders tools may read from, and the limits on what they read.

    Args:
        roots: allowed folders; each is resolved once here. Missing folders are kept (they may be
            created later) but nothing under them resolves until they exist.
        max_file_bytes: largest image file a tool reads (``Settings.max_file_bytes``).
        max_inline_bytes: largest decoded base64 image.
    """

    def __init__(
        self,
        roots: Iterable[Path | str],
        *,
        max_file_bytes: int,
        max_inline_bytes: int = MAX_INLINE_IMAGE_BYTES,
    ) -> None:
        resolved: list[Path] = []
        for root in roots:
            path = Path(os.path.realpath(Path(root).expanduser()))
            if path not in resolved:
                resolved.append(path)
        self.roots: tuple[Path, ...] = tuple(resolved)
        self.max_file_bytes = max_file_bytes
        self.max_inline_bytes = max_inline_bytes

    @property
    def confines(self) -> bool:
        """Whether anything is outside the roots (a sandbox rooted at the file system root allows all)."""
        return not any(root == Path(root.anchor) for root in self.roots)

    # ------------------------------------------------------------------ checks

    def describe_roots(self) -> str:
        """The allowed roots as a sentence fragment for messages."""
        if not self.roots:
            return (
                "no folders are allowed (start the server with --root DIR, or set IMG_AGENT_IMAGE_ROOTS "
                'to a JSON list such as ["/home/me/Pictures"])'
            )
        return "allowed folders: " + ", ".join(str(r) for r in self.roots)

    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved absolute path lies inside one of the roots (or is one)."""
        return any(resolved == root or resolved.is_relative_to(root) for root in self.roots)

    def resolve(self, path: str) -> Path:
        """Resolve ``path`` to an existing file or folder inside the roots.

        Raises:
            InvalidInputError: empty path, or a URL.
            NotFoundError: nothing exists there (after resolving).
            AccessDeniedError: it resolves outside every allowed root.
        """
        text = path.strip()
        if not text:
            raise InvalidInputError("The path is empty; give an absolute file or folder path.")
        if _URL_SCHEME.match(text):
            raise InvalidInputError(
                f"{text!r} is a URL; images are never fetched from the network. Give a local path under the "
                f"{self.describe_roots()}, or pass the image itself as base64."
            )
        candidate = Path(text).expanduser()
        if candidate.is_absolute():
            candidates = [candidate]
        elif self.roots:
            candidates = [root / candidate for root in self.roots]
        else:
            raise AccessDeniedError(f"Cannot read {text!r}: {self.describe_roots()}.")

        # Containment is decided on the resolved path before existence is looked at, so a refusal
        # never tells whether something exists outside the roots.
        inside: list[Path] = []
        for option in candidates:
            try:
                real = Path(os.path.realpath(option))
            except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
                raise InvalidInputError(f"Cannot resolve {text!r}: {exc}.") from exc
            if self.contains(real):
                inside.append(real)
        if not inside:
            raise AccessDeniedError(
                f"Access to {text!r} is refused: it is outside the {self.describe_roots()} "
                "(paths are checked after resolving symbolic links and '..')."
            )
        for real in inside:
            try:
                if real.exists():
                    return real
            except OSError as exc:  # permission denied on a component
                raise AccessDeniedError(f"Cannot read {text!r}: {exc.strerror or exc}.") from exc
        where = "" if candidate.is_absolute() else f" under any of the {self.describe_roots()}"
        raise NotFoundError(f"No file or folder {text!r} exists{where}. Check the path and try again.")

    def confine(self, path: str) -> Path:
        """``path`` made absolute and resolved, refused unless it lies inside the roots; it need not exist.

        For arguments that name indexed images rather than files to read (a removed file's entry
        can be removed from the index): the same resolve-then-check as :meth:`resolve`, without the
        existence check. Relative paths are taken under the first root.

        Raises:
            InvalidInputError: empty path, or a URL.
            AccessDeniedError: it resolves outside every allowed root.
        """
        text = path.strip()
        if not text:
            raise InvalidInputError("The path is empty; give an absolute file or folder path.")
        if _URL_SCHEME.match(text):
            raise InvalidInputError(f"{text!r} is a URL; give the indexed file or folder path.")
        candidate = Path(text).expanduser()
        if not candidate.is_absolute():
            if not self.roots:
                raise AccessDeniedError(f"Cannot use {text!r}: {self.describe_roots()}.")
            candidate = self.roots[0] / candidate
        try:
            real = Path(os.path.realpath(candidate))
        except (OSError, RuntimeError, ValueError) as exc:  # symlink loop, NUL byte
            raise InvalidInputError(f"Cannot resolve {text!r}: {exc}.") from exc
        if not self.contains(real):
            raise AccessDeniedError(
                f"{text!r} is outside the {self.describe_roots()} (checked after resolving symbolic links and "
                "'..'); give a file or folder inside them."
            )
        return real

    def allows_indexed(self, path: str) -> bool:
        """Whether an indexed image's recorded path (absolute, resolved when it was indexed) lies inside the
        roots. Decides which catalog entries a caller may remove; reading the file goes through
        :meth:`read_file`, which resolves it again."""
        return self.contains(Path(os.path.abspath(path)))

    # ------------------------------------------------------------------ reading

    def read_file(self, path: str) -> tuple[Path, bytes]:
        """Resolve ``path`` (see :meth:`resolve`) and read the regular file there, within the size limit.

        Opened without following a final symbolic link and without blocking (a FIFO swapped in
        after the check is refused, not waited on).
        """
        resolved = self.resolve(path)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(resolved, flags)
        except IsADirectoryError as exc:
            raise InvalidInputError(f"{path!r} is a folder; give the path of one image file.") from exc
        except OSError as exc:  # permission denied, or the path was swapped for a link after the check
            raise AccessDeniedError(f"Cannot read {path!r}: {exc.strerror or exc}.") from exc
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise InvalidInputError(f"{path!r} is a folder; give the path of one image file.")
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInputError(f"{path!r} is not a regular file.")
            if info.st_size > self.max_file_bytes:
                raise InvalidInputError(
                    f"{path!r} is {_mib(info.st_size)}; image files larger than {_mib(self.max_file_bytes)} are refused."
                )
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            data = handle.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:  # grew while we read it
            raise InvalidInputError(f"{path!r} is larger than {_mib(self.max_file_bytes)}; refused.")
        return resolved, data

    def decode_base64(self, data: str) -> bytes:
        """Decode a base64 image (plain, or a ``data:image/...;base64,`` URL) within the size limit.

        Raises:
            InvalidInputError: too large, or empty.
            ImageDecodeError: not valid base64.
        """
        text = data.strip()
        match = _DATA_URL.match(text)
        if match:
            text = text[match.end() :]
        elif _URL_SCHEME.match(text):
            raise InvalidInputError("image_base64 holds a URL; images are never fetched. Pass the image bytes as base64.")
        text = _WHITESPACE.sub("", text)
        if not text:
            raise InvalidInputError("image_base64 is empty; pass a base64-encoded JPEG, PNG or WebP image.")
        if len(text) > (self.max_inline_bytes + 2) // 3 * 4:
            raise InvalidInputError(
                f"image_base64 decodes to more than {_mib(self.max_inline_bytes)}; send a smaller image "
                "(downscale it, CLIP only looks at a few hundred pixels)."
            )
        if not _BASE64.match(text):
            raise ImageDecodeError("image_base64 is not valid base64; encode the image file's bytes with base64.")
        padded = text + "=" * (-len(text) % 4)
        try:
            raw = base64.urlsafe_b64decode(padded) if ("-" in text or "_" in text) else base64.b64decode(padded)
        except (binascii.Error, ValueError) as exc:
            raise ImageDecodeError("image_base64 is not valid base64; encode the image file's bytes with base64.") from exc
        if len(raw) > self.max_inline_bytes:
            raise InvalidInputError(f"image_base64 decodes to more than {_mib(self.max_inline_bytes)}; send a smaller image.")
        return raw
