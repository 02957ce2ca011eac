"""Where the service of one store listens, logs and records itself.

The socket lives in a per-user runtime folder that only its owner can enter (mode 0700, checked
on every use: a folder of another user, or one that others can enter, is refused), named after
the store's resolved path, so every client of a store finds the same socket, and socket paths stay
short enough for ``AF_UNIX`` whatever the data directory's length. The log and the record of the
running service stay in the data directory, beside what they are about.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from pathlib import Path
from typing import NamedTuple

from img_agent.errors import ServiceError

SOCKET_NAME_CHARS = 16
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 104-108 bytes depending on the system


def runtime_dir() -> Path:
    """The per-user folder of service sockets: ``$XDG_RUNTIME_DIR/img-agent``, else one under the temp folder."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        return Path(base) / "img-agent"
    return _temp_runtime_dir()


def _temp_runtime_dir() -> Path:
    import tempfile

    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"img-agent-{uid}"


def private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if needed and check that it is ours and closed to others."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as exc:
        raise ServiceError(f"Cannot create the service folder {path} ({exc.strerror or exc}). "
                           "Set XDG_RUNTIME_DIR to a folder you own.") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ServiceError(f"{path} is not a folder (a link or a file stands there). Remove it, or set "
                           "XDG_RUNTIME_DIR to a folder you own.")
    if sys.platform != "win32":
        if st.st_uid != os.getuid():
            raise ServiceError(f"The service folder {path} belongs to another user (uid {st.st_uid}). Remove it, "
                               "or set XDG_RUNTIME_DIR to a folder you own.")
        if st.st_mode & 0o077:
            try:
                os.chmod(path, 0o700)
            except OSError as exc:
                raise ServiceError(f"The service folder {path} is open to other users and cannot be closed "
                                   f"({exc.strerror or exc}); remove it.") from exc
    return path


class ServicePaths(NamedTuple):
    """The files of the service of the store in ``data_dir``."""

    data_dir: Path
    socket: Path
    start_lock: Path
    log: Path

    @classmethod
    def of(cls, data_dir: Path) -> ServicePaths:
        real = Path(os.path.realpath(Path(data_dir).expanduser()))
        key = hashlib.sha256(os.fsencode(real)).hexdigest()[:SOCKET_NAME_CHARS]
        run = runtime_dir()
        socket = run / f"{key}.sock"
        if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
            run = _temp_runtime_dir()
            socket = run / f"{key}.sock"
        # A store the user cannot write (read-only mount or permissions) is still served: its log goes beside the socket.
        writable = os.access(real, os.W_OK) if real.exists() else True
        log = real / "service.log" if writable else run / f"{key}.log"
        return cls(data_dir=real, socket=socket, start_lock=run / f"{key}.start.lock", log=log)

    def ensure_runtime_dir(self) -> None:
        private_dir(self.socket.parent)
