"""Prompt files with named variables.

Prompts live as plain text files named ``<name>.txt``. The bundled ones are package data in
``img_agent/prompts/``. A user folder (``LLM_PROMPTS_DIR``) overrides any of them file by file.

Variables use :class:`string.Template` syntax, ``$query`` or ``${query}`` (``$$`` is a literal
dollar sign), so prompts can show JSON examples with braces untouched. Rendering with a variable
missing raises :class:`~img_agent.errors.ConfigError` naming it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from img_agent.errors import ConfigError

PROMPT_SUFFIX = ".txt"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def bundled_prompts_dir() -> Path:
    """The folder of the prompts shipped with img-agent (package data)."""
    return Path(__file__).resolve().parents[1] / "prompts"


def bundled_prompt_names() -> list[str]:
    """Names of every bundled prompt, sorted."""
    folder = bundled_prompts_dir()
    return sorted(p.name[: -len(PROMPT_SUFFIX)] for p in folder.glob(f"*{PROMPT_SUFFIX}") if p.is_file())


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt file: its name, where it was read from, and its text."""

    name: str
    source: Path
    text: str

    @property
    def variables(self) -> frozenset[str]:
        """Names of the variables the template uses."""
        names: set[str] = set()
        for match in string.Template.pattern.finditer(self.text):
            name = match.group("named") or match.group("braced")
            if name:
                names.add(name)
        return frozenset(names)

    def render(self, **variables: object) -> str:
        """Substitute ``variables`` (converted with ``str``).

        Raises:
            ConfigError: a variable the template uses was not given, or the template has a
                malformed placeholder.
        """
        try:
            return string.Template(self.text).substitute({k: str(v) for k, v in variables.items()})
        except KeyError as exc:
            missing = exc.args[0]
            raise ConfigError(
                f"Prompt {self.name!r} ({self.source}) uses the variable ${missing}, which was not given. "
                f"Available: {', '.join(sorted(variables)) or 'none'}. Fix the prompt file or remove ${missing}."
            ) from None
        except ValueError as exc:
            raise ConfigError(
                f"Prompt {self.name!r} ({self.source}) has a malformed placeholder ({exc}); "
                "write variables as $name or ${name} and a literal dollar sign as $$."
            ) from None


def load_prompt(name: str, prompts_dir: Path | None = None) -> PromptTemplate:
    """Load prompt ``name`` from ``prompts_dir`` when it has one, else the bundled prompt.

    Raises:
        ConfigError: the name is invalid, no such prompt exists, or the file cannot be read.
    """
    if not _NAME.match(name):
        raise ConfigError(f"Invalid prompt name {name!r}: use lowercase letters, digits and underscores.")
    candidates: list[Path] = []
    if prompts_dir is not None:
        candidates.append(Path(prompts_dir).expanduser() / f"{name}{PROMPT_SUFFIX}")
    candidates.append(bundled_prompts_dir() / f"{name}{PROMPT_SUFFIX}")
    for path in candidates:
        if path.is_file():
            return _read(path, name, path.stat().st_mtime_ns)
    raise ConfigError(
        f"No prompt named {name!r} (looked in {', '.join(str(c.parent) for c in candidates)}). "
        f"Bundled prompts: {', '.join(bundled_prompt_names()) or 'none found; reinstall img-agent'}."
    )


def render_prompt(name: str, prompts_dir: Path | None = None, /, **variables: object) -> str:
    """Load prompt ``name`` (see :func:`load_prompt`) and render it with ``variables``."""
    return load_prompt(name, prompts_dir).render(**variables)


@cache
def _read(path: Path, name: str, _mtime_ns: int) -> PromptTemplate:
    """Read a prompt file; cached per path and modification time."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read prompt file {path}: {exc}. Check the file or LLM_PROMPTS_DIR.") from exc
    return PromptTemplate(name=name, source=path, text=text)
