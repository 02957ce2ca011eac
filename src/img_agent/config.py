"""Configuration: command-line flags > environment (``IMG_AGENT_*``, ``LLM_*``) > files > defaults.

The files, in rising precedence: the user config file (:func:`user_config_file`, dotenv syntax) and
the file ``--env-file`` / ``IMG_AGENT_ENV_FILE`` names. A ``.env`` in the working directory is
never read: a server an assistant starts inside some project folder must not pick up that
project's settings. Entry points (CLI, service) build a :class:`Settings` once, passing the flags
the user gave as keyword arguments; library code receives the object and never reads the
environment itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from img_agent.locations import (  # noqa: F401 - where settings come from, re-exported
    CONFIG_FILE_VARIABLE,
    DEFAULT_HTTP_HOST,
    DEFAULT_HTTP_PORT,
    ENV_FILE_VARIABLE,
    default_data_dir,
    env_files,
    user_config_file,
)
from img_agent.results import DEFAULT_TOPK, MAX_TOPK  # noqa: F401 - re-exported

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_MERGE_THRESHOLD = 1000  # buffered vectors that trigger a merge into the main index
DEFAULT_SERVICE_IDLE_TIMEOUT = 30 * 60.0
DEFAULT_WATCH_DEBOUNCE_S = 2.0
"""Seconds without a file event before watched changes are applied (``img-agent watch`` and the service)."""


class _FromFiles(BaseSettings):
    """Settings read from flags, the environment and :func:`env_files` (never a working-directory ``.env``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = DotEnvSettingsSource(settings_cls, env_file=env_files() or None, env_file_encoding="utf-8")
        return init_settings, env_settings, files


class Settings(_FromFiles):
    """Everything the engine and its adapters can be told. Env prefix ``IMG_AGENT_``."""

    model_config = SettingsConfigDict(env_prefix="IMG_AGENT_", env_file=None, extra="ignore", validate_default=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="Where the catalog, vectors and index live.")
    model: str = Field(DEFAULT_MODEL, description="open_clip model name, or 'tiny-test' (random weights, offline).")
    pretrained: str | None = Field(
        None,
        description="open_clip pretrained tag (e.g. laion2b_s34b_b79k, openai) or a local checkpoint file; "
        "default: the model's recommended tag.",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Torch device; auto = cuda, then mps, then cpu.")
    inference: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="What encodes images: auto = ONNX Runtime on CPU when it installs, exports and matches torch, "
        "else torch (always torch on cuda/mps); torch; onnx (CPU only, an error when unavailable).",
    )
    batch_size: int = Field(32, ge=1, le=4096, description="Images per model forward pass.")
    workers: int = Field(
        default_factory=lambda: max(1, min(8, os.cpu_count() or 1)),
        ge=0,
        le=64,
        description="Threads decoding images while the model runs (0 = decode inline).",
    )
    index_string: str = Field(
        "auto",
        description="'auto' (choose by collection size) or a faiss factory string such as 'IVF4096,PQ32x8'.",
    )
    nprobe: int | None = Field(
        None, ge=1, description="IVF lists probed per query; default: the setting the index measured for itself "
                                "(see recall_target), else one that scales with nlist.")
    rerank: int = Field(
        10, ge=1, le=100, description="For compressed indexes: candidates re-ranked exactly = rerank x k (at least 100); "
                                      "when set, it overrides the measured setting.")
    recall_target: float = Field(
        0.99, gt=0, le=1, description="Recall@10 a trained index tunes its search setting to reach, measured on a held-out "
                                      "sample of the store's own vectors after each training.")
    vector_store: str | None = Field(
        None, description="Where a new store's vectors are searched: 'faiss' (in-process, the default) or a Milvus URI: "
        "a local '*.db' file (Milvus Lite) or 'http(s)://host:19530' (Milvus standalone or cluster). A store keeps the "
        "one it was created with (default: that one); 'img-agent migrate --to URI' moves it.")
    milvus_token: str | None = Field(None, description="Milvus token ('user:password' or an API key) for a server URI.")
    milvus_db: str | None = Field(None, description="Milvus database name (default: the server's 'default').")
    milvus_collection: str = Field(
        "img_agent", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
        description="Milvus collection holding this store's images (letters, digits and '_').")
    merge_threshold: int = Field(
        DEFAULT_MERGE_THRESHOLD, ge=1, description="Buffer size at which an add merges the buffer into the main index."
    )
    auto_rebuild: bool = Field(True, description="After 'index', retrain when the collection outgrew its index type.")
    topk: int = Field(DEFAULT_TOPK, ge=1, le=MAX_TOPK, description="Default number of results.")
    max_image_pixels: int = Field(
        100_000_000, ge=1, description="Images with more pixels are skipped (decompression-bomb guard)."
    )
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description="Image files larger than this are skipped.")
    max_query_pixels: int = Field(
        40_000_000, ge=1,
        description="Query images (search by example) with more pixels are refused before decoding; CLIP looks at a "
        "few hundred pixels, so a query can always be downscaled.",
    )
    http_token: str | None = Field(
        None, description="Bearer token 'img-agent serve --http' requires on a non-loopback address "
        "(default: a random one, printed at start).",
    )
    http_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Extra Host header values (e.g. 'images.example:8765' or 'images.example:*') the HTTP MCP "
        "endpoint accepts besides the bound address; 'http://' plus each is accepted as an Origin.",
    )
    service_idle_timeout: float = Field(
        DEFAULT_SERVICE_IDLE_TIMEOUT, ge=0,
        description="Seconds the store's service stays up without requests or jobs (0 = until stopped).",
    )
    image_roots: list[Path] = Field(
        default_factory=list, description="Configured image folders; default allowed roots for tool file access."
    )
    thumb_cache_mb: float = Field(
        256, ge=0, description="Most MiB the web gallery's thumbnail cache keeps on disk; the least recently used "
        "thumbnails go first (0 = no disk cache).",
    )
    watch_folders: list[Path] = Field(
        default_factory=list,
        description="Folders the store's service keeps in step with the index while it runs (JSON list, as "
        "image_roots): caught up at start, then every settled batch of file changes is applied.",
    )
    watch_debounce: float = Field(
        DEFAULT_WATCH_DEBOUNCE_S, ge=0,
        description="Seconds without file events in the watched folders before their changes are applied.",
    )

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("image_roots", "watch_folders", mode="after")
    @classmethod
    def _expand_roots(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]


class LLMSettings(_FromFiles):
    """OpenAI-compatible LLM endpoint. Env prefix ``LLM_`` (``LLM_BASE_URL``, ``LLM_API_KEY``, ``LLM_MODEL`` ...)."""

    model_config = SettingsConfigDict(env_prefix="LLM_", env_file=None, extra="ignore")

    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1 or a local server.")
    api_key: str | None = Field(None, description="API key; some local servers accept any value.")
    model: str = Field("gpt-4o-mini", description="Chat model name.")
    timeout: float = Field(
        30.0, gt=0,
        description="Seconds one LLM request may take in all, from connecting to the last byte of the answer "
        "(each retry gets as long); a request still running then is abandoned and retried.",
    )
    deadline: float = Field(
        60.0, gt=0,
        description="Seconds of LLM work one command may use in all: every request, retry and retry pause of an "
        "ask, a search --expand or one chat message. When it passes, the command goes on without the LLM "
        "(plain results, with a note saying so).",
    )
    max_retries: int = Field(2, ge=0, le=10, description="Retries on timeouts, 429 and 5xx.")
    vision: Literal["auto", "yes", "no"] = Field(
        "auto", description="Send thumbnails to the model: auto = try, and fall back to text if refused."
    )
    prompts_dir: Path | None = Field(None, description="Folder whose prompt files override the bundled ones.")

    @property
    def enabled(self) -> bool:
        """An LLM is configured when a base URL or an API key is set."""
        return bool(self.base_url or self.api_key)
