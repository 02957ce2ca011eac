"""What a command handler gets: the parsed flags, settings and LLM built once, and the store's tools.

Settings come from flags > environment > settings files > defaults (:mod:`img_agent.config`):
``IMG_AGENT_*`` for the store (:class:`~img_agent.config.Settings`), ``LLM_*`` overridden by the
``--llm-*`` flags for the model (:class:`~img_agent.config.LLMSettings`). The environment is read
here and nowhere else.

The store's tools (:meth:`CLIContext.tools`) are those of its service, started when none runs, so
the model and the index stay warm between commands and the CLI never waits on another process's
lock; with ``--no-service`` the command opens the store itself.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from img_agent.cli import output
from img_agent.errors import ConfigError, ModelMismatchError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from img_agent.agent.llm import LLMClient
    from img_agent.config import LLMSettings, Settings
    from img_agent.index.engine import Engine
    from img_agent.service.client import ServiceClient
    from img_agent.tools.image_tools import ImageTools

CLI_ROOTS = ["/"]
"""The CLI acts for the person at the keyboard: its tool calls may touch any folder they can."""

# global flag name -> Settings field, for the options every command shares
GLOBAL_SETTINGS = ("data_dir", "model", "pretrained", "device")

LLM_PREFIX = "LLM_"
# --llm-* flag (as argparse stores it) -> LLMSettings field
LLM_FLAGS = {
    "llm_base_url": "base_url",
    "llm_api_key": "api_key",
    "llm_model": "model",
    "llm_timeout": "timeout",
    "llm_deadline": "deadline",
    "llm_retries": "max_retries",
    "llm_vision": "vision",
    "prompts_dir": "prompts_dir",
}


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``--llm-*`` flags, each overriding its ``LLM_*`` variable (read by :func:`llm_settings`)."""
    group = parser.add_argument_group("LLM (overrides the LLM_* environment variables and .env)")
    group.add_argument("--llm-base-url", default=None, metavar="URL", help="OpenAI-compatible endpoint (LLM_BASE_URL)")
    group.add_argument("--llm-api-key", default=None, metavar="KEY",
                       help="API key (LLM_API_KEY; prefer the environment)")
    group.add_argument("--llm-model", default=None, metavar="NAME", help="chat model (LLM_MODEL)")
    group.add_argument("--llm-timeout", default=None, type=float, metavar="SECONDS",
                       help="seconds per LLM request, whole (LLM_TIMEOUT)")
    group.add_argument("--llm-deadline", default=None, type=float, metavar="SECONDS",
                       help="seconds of LLM work per command, retries included (LLM_DEADLINE)")
    group.add_argument("--llm-retries", default=None, type=int, metavar="N",
                       help="retries on timeouts, 429, 5xx (LLM_MAX_RETRIES)")
    group.add_argument("--llm-vision", default=None, choices=["auto", "yes", "no"],
                       help="send thumbnails to the model (LLM_VISION)")
    group.add_argument("--prompts-dir", default=None, metavar="DIR",
                       help="folder of prompt files overriding the bundled ones")


def llm_settings(args: argparse.Namespace) -> LLMSettings:
    """``LLMSettings`` from the environment / ``.env``, overridden by the ``--llm-*`` flags the command has.

    Raises:
        ConfigError: a flag or ``LLM_*`` value is invalid.
    """
    from pydantic import ValidationError

    from img_agent.config import LLMSettings

    given = {field: getattr(args, flag) for flag, field in LLM_FLAGS.items() if getattr(args, flag, None) is not None}
    try:
        return LLMSettings(**given)
    except ValidationError as exc:
        raise ConfigError(
            f"Invalid LLM configuration ({_problems(exc)}). Fix the --llm-* flag or LLM_* variable."
        ) from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


class CLIContext:
    """Parsed args, settings built once, the engine opened on demand (closed by :meth:`close`), the LLM client."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.json: bool = bool(getattr(args, "json", False))
        self._settings: Settings | None = None
        self._engine: Engine | None = None
        self._llm: LLMClient | None = None
        self._llm_built = False
        self._tools: ImageTools | None = None
        self._client: ServiceClient | None = None
        self.no_service = bool(getattr(args, "no_service", False))

    def settings(self, **overrides: Any) -> Settings:
        """Settings from flags > env/.env > defaults; ``overrides`` are further flags of a command.

        Raises:
            ConfigError: a flag or ``IMG_AGENT_*`` value is invalid.
        """
        from pydantic import ValidationError

        from img_agent.config import Settings

        if self._settings is None or overrides:
            given = {k: getattr(self.args, k) for k in GLOBAL_SETTINGS if getattr(self.args, k, None) is not None}
            given.update({k: v for k, v in overrides.items() if v is not None})
            try:
                self._settings = Settings(**given)
            except ValidationError as exc:
                raise ConfigError(
                    f"Invalid configuration ({_problems(exc)}). Fix the flag or IMG_AGENT_* variable."
                ) from None
        return self._settings

    def engine(self, **overrides: Any) -> Engine:
        """The engine for the configured data directory (opened once, closed by :meth:`close`)."""
        from img_agent.index.engine import Engine

        if self._engine is None:
            self._engine = Engine.open(self.settings(**overrides))
        return self._engine

    def llm(self) -> LLMClient | None:
        """The LLM client the ``--llm-*`` flags and ``LLM_*`` environment configure, or ``None`` (built once)."""
        if not self._llm_built:
            from img_agent.agent.llm import LLMClient

            self._llm = LLMClient.from_settings(llm_settings(self.args))
            self._llm_built = True
        return self._llm

    def launch_args(self) -> list[str]:
        """The global flags given on this command line, for a service it starts."""
        out: list[str] = []
        for name in ("model", "pretrained", "device"):
            value = getattr(self.args, name, None)
            if value is not None:
                out += [f"--{name}", str(value)]
        return out

    def service(self, *, client: str = "cli", roots: list[str] | None = CLI_ROOTS) -> ServiceClient:
        """A client of the store's service (not started yet), carrying this command's ``--llm-*`` flags."""
        from img_agent.locations import data_dir
        from img_agent.service.client import ServiceClient

        # this client's LLM (its LLM_* environment, then its --llm-* flags) applies to its own calls
        llm: dict[str, Any] = {key[len(LLM_PREFIX):].lower(): value for key, value in os.environ.items()
                               if key.upper().startswith(LLM_PREFIX) and value}
        llm.update({field: getattr(self.args, flag) for flag, field in LLM_FLAGS.items()
                    if getattr(self.args, flag, None) is not None})
        return ServiceClient(data_dir(getattr(self.args, "data_dir", None)), launch_args=self.launch_args(),
                             client=client, roots=roots, llm=llm)

    def local_tools(self) -> ImageTools:
        """With ``--no-service``: the tools over an engine opened in this process."""
        if self._tools is None:
            from img_agent.tools.image_tools import ImageTools
            from img_agent.tools.sandbox import Sandbox

            engine = self.engine()
            sandbox = Sandbox(CLI_ROOTS, max_file_bytes=engine.settings.max_file_bytes)
            self._tools = ImageTools(engine, sandbox, llm=self.llm())
        return self._tools

    def _started_service(self) -> ServiceClient:
        client = self.service()
        health = client.ensure()
        model = getattr(self.args, "model", None)
        if model is not None and model != health.model:
            raise ModelMismatchError(
                f"The store at {client.paths.data_dir} holds embeddings of {health.model} (its service runs "
                f"that model), not {model}; mixing embedding spaces would give meaningless results. Drop "
                "--model, or use another --data-dir for the other model."
            )
        return client

    @property
    def remote(self) -> bool:
        """Whether tool calls go through the store's service (else ``--no-service``: this process)."""
        return not self.no_service

    def client(self) -> ServiceClient:
        """The client of the store's service, which runs (started if needed) and serves this store's model."""
        if self._client is None:
            self._client = self._started_service()
        return self._client

    def call(self, name: str, **arguments: Any) -> dict[str, Any]:
        """Call tool ``name`` and return its result as JSON data (as every tool surface does): through the
        service, without importing the tool definitions, or on the tools of this process."""
        if self.remote:
            return self.client().call_tool(name, arguments)
        from img_agent.tools.image_tools import get_spec

        spec = get_spec(name)
        return spec.call(self.local_tools(), spec.parse(arguments)).model_dump(mode="json")

    def emit(self, result: Any, human: Callable[[], None]) -> None:
        """Print ``result`` as JSON with ``--json``, else call the human renderer."""
        output.emit(result, human, as_json=self.json)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
