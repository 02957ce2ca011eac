"""Where model weights come from: the presets table, default tags, local checkpoints, the hub.

Importing this module imports neither torch nor open_clip.

* :data:`MODEL_PRESETS` is the table of named models. ``tiny-test`` is a small open_clip
  ``CLIP`` built in-process with seeded random weights: no download, deterministic, for tests
  and offline smoke runs (its search results are meaningless). Every other open_clip model
  name also works; presets only add a default pretrained tag.
* :func:`weights_label` is the one name of a model's weights: what a store records and what
  an encoder reports.
* :func:`resolve_weights` finds the checkpoint file for a tag, a file or a folder. Weights
  given by tag come from the local Hugging Face cache when present; otherwise the hub is probed
  with a short timeout before anything is downloaded, so an offline machine gets a
  :class:`~img_agent.errors.ModelError` with instructions within seconds instead of a hang.
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from img_agent.errors import ConfigError, ModelError

__all__ = [
    "MODEL_PRESETS",
    "ModelPreset",
    "default_pretrained",
    "resolve_weights",
    "tag_examples",
    "weights_label",
    "weights_tag",
]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
"""Seconds allowed to open a TCP connection to the model hub before giving up."""
ETAG_TIMEOUT_S = 10.0
"""Seconds allowed for the hub's metadata request (huggingface_hub's ``etag_timeout``)."""

_HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
_HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
_CHECKPOINT_NAMES = (
    _HF_SAFE_WEIGHTS_NAME,
    "open_clip_pytorch_model.safetensors",
    _HF_WEIGHTS_NAME,
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
)
"""File names looked for, in this order, when ``pretrained`` is a directory."""
_CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz", ".ckpt")
_OFFLINE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class ModelPreset:
    """A named model users can pass as ``--model``.

    Either ``open_clip_name`` names an open_clip architecture whose weights come from
    ``pretrained`` (default ``default_pretrained``), or ``config`` is an open_clip ``CLIP``
    configuration built in-process with random weights from ``seed`` (no download).
    """

    name: str
    summary: str
    open_clip_name: str | None = None
    default_pretrained: str | None = None
    config: Mapping[str, Any] | None = None
    seed: int = 0

    @property
    def random_weights(self) -> bool:
        return self.config is not None

    @property
    def weights_label(self) -> str:
        """What ``ClipEncoder.pretrained`` reports for a random-weight preset."""
        return f"random-seed-{self.seed}"


_TINY_TEST_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 1},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
)

MODEL_PRESETS: Mapping[str, ModelPreset] = MappingProxyType(
    {
        preset.name: preset
        for preset in (
            ModelPreset(
                name="tiny-test",
                summary=(
                    "random weights (seed 0), 32-d, no download: for tests and offline smoke runs; "
                    "results are meaningless"
                ),
                config=_TINY_TEST_CONFIG,
                seed=0,
            ),
            ModelPreset(
                name="ViT-B-32",
                summary="open_clip ViT-B/32, LAION-2B weights: fast, 512-d (the default)",
                open_clip_name="ViT-B-32",
                default_pretrained="laion2b_s34b_b79k",
            ),
            ModelPreset(
                name="ViT-B-16",
                summary="open_clip ViT-B/16, LAION-2B weights: more accurate, about 4x slower, 512-d",
                open_clip_name="ViT-B-16",
                default_pretrained="laion2b_s34b_b88k",
            ),
            ModelPreset(
                name="ViT-L-14",
                summary="open_clip ViT-L/14, LAION-2B weights: most accurate, GPU recommended, 768-d",
                open_clip_name="ViT-L-14",
                default_pretrained="laion2b_s32b_b82k",
            ),
        )
    }
)
"""Named models. Any other open_clip model name is accepted too (pretrained tag required)."""


def default_pretrained(model: str) -> str | None:
    """The default pretrained tag of a preset (None for random-weight presets and unknown names)."""
    preset = MODEL_PRESETS.get(model)
    return preset.default_pretrained if preset else None


def weights_tag(model: str, pretrained: str | None) -> str | None:
    """The tag or checkpoint path asked for: empty or ``"default"`` means the preset's default tag (maybe None)."""
    value = (pretrained or "").strip()
    return default_pretrained(model) if value in ("", "default") else value


def weights_label(model: str, pretrained: str | None) -> str:
    """The one name of the weights ``pretrained`` gives ``model``: recorded by a store, reported by an encoder.

    ``random-seed-N`` for a random-weight preset; otherwise the tag (see :func:`weights_tag`),
    or an existing checkpoint file or folder as an absolute, resolved path.

    Raises:
        ConfigError: no tag is given and the model has no default one.
    """
    preset = MODEL_PRESETS.get(model)
    if preset is not None and preset.random_weights:
        return preset.weights_label
    value = weights_tag(model, pretrained)
    if not value:
        raise ConfigError(
            f"Model {model!r} has no default weights; pass --pretrained TAG (see open_clip.list_pretrained()) "
            "or --pretrained /path/to/checkpoint."
        )
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


# --------------------------------------------------------------------------- weights


def _download_help(arch: str, tag: str, reason: str, source: str | None = None) -> str:
    where = f" ({source})" if source else ""
    return (
        f"weights for {arch}/{tag} could not be downloaded ({reason}). "
        f"Download the checkpoint{where} on a machine with internet access and pass "
        "--pretrained /path/to/open_clip_pytorch_model.bin "
        "(or set IMG_AGENT_PRETRAINED), or use --model tiny-test for offline smoke runs "
        "(random weights, meaningless results)."
    )


def _hub_offline() -> bool:
    """Whether Hugging Face offline mode is on (huggingface_hub's own flag, or HF_HUB_OFFLINE now).

    huggingface_hub reads ``HF_HUB_OFFLINE`` once at import; the variable is read again here so
    that setting it later in the process is still honoured.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _OFFLINE_VALUES


def _hub_address() -> tuple[str, int]:
    from huggingface_hub import constants

    parts = urlsplit(constants.ENDPOINT)
    return parts.hostname or "huggingface.co", parts.port or (80 if parts.scheme == "http" else 443)


def _probe(host: str, port: int, timeout: float) -> str | None:
    """Try a TCP connection; None when it opens, else why not. Never takes much longer than ``timeout``.

    Runs in a daemon thread because name resolution (``getaddrinfo``) ignores socket timeouts.
    """
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(exc.strerror or str(exc) or type(exc).__name__)

    thread = threading.Thread(target=attempt, name="img-agent-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return f"no answer within {timeout:g} s"
    return outcome[0]


def _hub_candidates(filename: str) -> list[str]:
    """The safetensors variant of a checkpoint name first, then the name itself (as open_clip does)."""
    names = []
    if filename == _HF_WEIGHTS_NAME:
        names.append(_HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        names.append(filename[:-4] + ".safetensors")
    names.append(filename)
    return names


def _fetch_from_hub(arch: str, tag: str, hf_hub: str) -> str:
    """Local path of the checkpoint for ``hf_hub`` ('org/repo/' or 'org/repo/file'): cache, else download."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, filename = posixpath.split(hf_hub)  # 'org/repo/' means the default file name
    filename = filename or _HF_WEIGHTS_NAME
    candidates = _hub_candidates(filename)
    source = f"file {filename} of https://huggingface.co/{repo_id}"

    for name in candidates:
        try:
            return hf_hub_download(repo_id, name, local_files_only=True)
        except (EntryNotFoundError, OSError):
            continue

    if _hub_offline():
        reason = "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        raise ModelError(_download_help(arch, tag, reason, source))
    host, port = _hub_address()
    unreachable = _probe(host, port, PROBE_TIMEOUT_S)
    if unreachable is not None:
        raise ModelError(_download_help(arch, tag, f"{host}:{port} is unreachable: {unreachable}", source))

    logger.info("downloading %s weights %s from %s", arch, tag, repo_id)
    for name in candidates:
        try:
            return hf_hub_download(repo_id, name, etag_timeout=ETAG_TIMEOUT_S)
        except EntryNotFoundError:
            continue
        # Network boundary: huggingface_hub surfaces transport failures as several unrelated
        # types (its own HTTP errors, OSError, its HTTP client's errors). Each means "the
        # download failed"; the ModelError keeps the original text and chains the cause.
        except Exception as exc:
            raise ModelError(_download_help(arch, tag, f"{type(exc).__name__}: {exc}", source)) from exc
    raise ModelError(_download_help(arch, tag, f"{repo_id} holds none of {', '.join(candidates)}", source))


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value or "/" in value or value.startswith(("~", ".")) or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def resolve_weights(arch: str, pretrained: str) -> tuple[str, Mapping[str, Any]]:
    """``(checkpoint file, pretrained config)`` for a tag, a checkpoint file or a folder holding one.

    The config is open_clip's entry for a tag (preprocessing mean/std/..., quick_gelu) and
    empty for files.
    """
    import open_clip

    value = pretrained.strip()
    expanded = os.path.expanduser(value)
    if os.path.isdir(expanded):
        for name in _CHECKPOINT_NAMES:
            candidate = os.path.join(expanded, name)
            if os.path.isfile(candidate):
                return candidate, {}
        raise ModelError(
            f"no checkpoint in folder {value}: expected one of {', '.join(_CHECKPOINT_NAMES)}; "
            "pass the checkpoint file itself with --pretrained"
        )
    if os.path.isfile(expanded):
        return expanded, {}
    if _looks_like_path(value):
        raise ModelError(
            f"checkpoint file not found: {value}. Pass an existing file with --pretrained "
            f"(or IMG_AGENT_PRETRAINED), or a tag such as {tag_examples(arch)}"
        )
    pcfg = open_clip.get_pretrained_cfg(arch, value)
    if not pcfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        known = f"known tags for {arch}: {', '.join(tags)}" if tags else f"open_clip knows no weights for {arch}"
        raise ModelError(f"unknown pretrained tag {value!r} for {arch}; {known}; or pass a checkpoint file path")
    if pcfg.get("file"):
        return str(pcfg["file"]), pcfg
    if pcfg.get("hf_hub"):
        return _fetch_from_hub(arch, value, str(pcfg["hf_hub"])), pcfg
    url = pcfg.get("url") or "its published URL"
    raise ModelError(_download_help(arch, value, "this tag has no Hugging Face source", url))


def tag_examples(arch: str) -> str:
    """A few pretrained tags open_clip knows for ``arch``, for messages."""
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)[:3]
    return ", ".join(tags) if tags else "laion2b_s34b_b79k"
