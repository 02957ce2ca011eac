"""Where img-agent keeps things, and where its settings files are: light to import (no pydantic).

Thin clients (the CLI talking to a store's service, the stdio bridge) find the store with
:func:`data_dir` before, or instead of, building :class:`~img_agent.config.Settings`; it resolves
the one setting exactly as ``Settings`` does (flag > environment > settings files > default).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_HTTP_HOST = "127.0.0.1"  # HTTP servers bind to loopback unless told otherwise
DEFAULT_HTTP_PORT = 8765
ENV_FILE_VARIABLE = "IMG_AGENT_ENV_FILE"
CONFIG_FILE_VARIABLE = "IMG_AGENT_CONFIG"
DATA_DIR_VARIABLE = "IMG_AGENT_DATA_DIR"


def default_data_dir() -> Path:
    """Per-user data directory following each platform's convention."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "img-agent"


def user_cache_dir() -> Path:
    """Per-user cache directory following each platform's convention (``$XDG_CACHE_HOME/img-agent``,
    ``~/Library/Caches/img-agent``, ``%LOCALAPPDATA%/img-agent/cache``)."""
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "img-agent" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "img-agent"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "img-agent"


def user_config_file() -> Path:
    """The per-user settings file (dotenv syntax): ``IMG_AGENT_CONFIG``, else ``config.env`` in the
    platform's config folder (``$XDG_CONFIG_HOME/img-agent``, ``~/Library/Application Support/img-agent``,
    ``%APPDATA%/img-agent``)."""
    if os.environ.get(CONFIG_FILE_VARIABLE):
        return Path(os.environ[CONFIG_FILE_VARIABLE]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "img-agent" / "config.env"


def env_files() -> tuple[Path, ...]:
    """The settings files read, lowest precedence first: the user config file, then ``IMG_AGENT_ENV_FILE``."""
    files = [user_config_file()]
    if os.environ.get(ENV_FILE_VARIABLE):
        files.append(Path(os.environ[ENV_FILE_VARIABLE]).expanduser())
    return tuple(f for f in files if f.is_file())


def data_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    """The store folder as :class:`~img_agent.config.Settings` resolves it, without building it."""
    if flag is not None:
        return Path(flag).expanduser()
    value = _lookup(DATA_DIR_VARIABLE)
    return Path(value).expanduser() if value else default_data_dir()


def _lookup(name: str) -> str | None:
    """A setting's raw value: the environment first (names are case-insensitive), then the settings files,
    the later file first."""
    for key, value in os.environ.items():
        if key.upper() == name:
            return value
    files = env_files()
    if files:
        from dotenv import dotenv_values

        for path in reversed(files):
            for key, value in dotenv_values(path, encoding="utf-8").items():
                if key.upper() == name and value is not None:
                    return value
    return None
