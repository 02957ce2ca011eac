"""CLIP encoders: model presets, weight resolution that never hangs, batched encoding, the ingestion pipeline.

Importing this module does not import torch or open_clip (servers must answer at once); they
are imported on first use, inside the functions that need them.

* :data:`MODEL_PRESETS` is the table of named models. ``tiny-test`` is a small open_clip
  ``CLIP`` built in-process with seeded random weights: no download, deterministic, for tests
  and offline smoke runs (its search results are meaningless). Every other open_clip model
  name also works; presets only add a default pretrained tag.
* :meth:`ClipEncoder.create` builds a model. Weights given by tag come from the local Hugging
  Face cache when present; otherwise the hub is probed with a short timeout before anything
  is downloaded, so an offline machine gets a :class:`~img_agent.errors.ModelError` with
  instructions within seconds instead of a hang.
* :meth:`ClipEncoder.encode_stream` is the ingestion pipeline: decode + preprocess in a
  bounded thread pool, model forwards on full batches in the calling thread.
* :func:`get_encoder` caches one encoder per (model, weights, device) per process.
"""

from __future__ import annotations

import difflib
import itertools
import logging
import os
import pickle
import posixpath
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from img_agent.errors import ConfigError, InvalidInputError, ModelError
from img_agent.embed.images import DuplicateContent, DuplicateItem, to_rgb
from img_agent.results import ProgressCallback, SkippedItem

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_PRESETS",
    "ClipEncoder",
    "EncodedChunk",
    "ModelPreset",
    "clear_encoder_cache",
    "default_pretrained",
    "get_encoder",
    "resolve_device",
]

logger = logging.getLogger(__name__)

X = TypeVar("X")
Y = TypeVar("Y")

PROBE_TIMEOUT_S = 3.0
"""Seconds allowed to open a TCP connection to the model hub before giving up."""
ETAG_TIMEOUT_S = 10.0
"""Seconds allowed for the hub's metadata request (huggingface_hub's ``etag_timeout``)."""
TEXT_BATCH_SIZE = 256
"""Texts per forward pass in :meth:`ClipEncoder.encode_text`."""
IMAGE_BATCH_SIZE = 32
"""Images per forward pass in :meth:`ClipEncoder.encode_images`."""

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


# --------------------------------------------------------------------------- device


def resolve_device(device: str = "auto") -> str:
    """Turn ``auto`` into ``cuda``, then ``mps``, then ``cpu``; check an explicit device exists.

    Raises:
        ConfigError: unknown device name, or CUDA / MPS asked for but not available.
    """
    import torch

    value = device.strip().lower()
    if value == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if value == "cpu":
        return value
    if value == "cuda" or value.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but CUDA is not available; use --device cpu or auto")
        return value
    if value == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' asked for, but Apple MPS is not available; use --device cpu or auto")
        return value
    raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")


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


def _resolve_weights(arch: str, pretrained: str) -> tuple[str, Mapping[str, Any]]:
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
            f"(or IMG_AGENT_PRETRAINED), or a tag such as {_tag_examples(arch)}"
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


def _checkpoint_errors() -> tuple[type[BaseException], ...]:
    """The exception types open_clip, torch.load and safetensors use for an unusable checkpoint."""
    errors: tuple[type[BaseException], ...] = (
        RuntimeError,
        ValueError,
        KeyError,
        OSError,
        EOFError,
        pickle.UnpicklingError,
    )
    try:
        from safetensors import SafetensorError
    except ImportError:
        return errors
    return (*errors, SafetensorError)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tag_examples(arch: str) -> str:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(arch)[:3]
    return ", ".join(tags) if tags else "laion2b_s34b_b79k"


# --------------------------------------------------------------------------- encoder


class EncodedChunk(NamedTuple):
    """One step of :meth:`ClipEncoder.encode_stream` (unpacks as a 3-tuple).

    ``payloads[i]`` belongs to ``vectors[i]``; ``skipped`` lists the items of this stretch of
    input that produced no vector (:class:`~img_agent.embed.images.DuplicateItem` for known
    content, a plain :class:`SkippedItem` for failures).
    """

    payloads: list[Any]
    vectors: np.ndarray
    skipped: list[SkippedItem]


@dataclass(frozen=True)
class _Prepared:
    payload: Any
    pixels: Any  # uint8 HxWx3 numpy array (split transform) or a CHW float tensor (fallback)


def _split_transform(
    transform: Callable[[Image.Image], Any],
) -> tuple[Callable[[Image.Image], Image.Image], list[Callable[[Any], Any]]] | None:
    """Split an open_clip eval transform into its PIL stage and its tensor stage.

    open_clip's eval transform is ``Compose([resize, crop, convert, ToTensor, Normalize])``.
    The PIL stage (resize, crop) runs in decode threads without touching torch; ``ToTensor``
    and what follows run once per batch (same arithmetic, bit-identical result). Returns None
    when the transform has another shape; callers then run it whole per image.
    """
    from torchvision.transforms import Compose, Normalize, ToTensor

    if not isinstance(transform, Compose):
        return None
    steps = list(transform.transforms)
    cut = next((i for i, step in enumerate(steps) if isinstance(step, ToTensor)), None)
    if cut is None or not all(isinstance(step, Normalize) for step in steps[cut + 1 :]):
        return None
    return Compose(steps[:cut]), steps[cut + 1 :]


class ClipEncoder:
    """A CLIP model ready to embed texts and images into one unit-norm space.

    Build with :meth:`create` (or the cached :func:`get_encoder`). Attributes: ``name``
    (model name as given), ``pretrained`` (tag or checkpoint path; ``random-seed-N`` for
    random-weight presets), ``dim`` (embedding size), ``image_size`` (model input side, the
    ``draft_size`` to decode with) and ``device``.

    Encoding methods are safe to call from several threads at once.
    """

    def __init__(
        self,
        *,
        name: str,
        pretrained: str,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        transform: Callable[[Image.Image], torch.Tensor],
        device: str,
        dim: int,
        image_size: int,
    ) -> None:
        self.name = name
        self.pretrained = pretrained
        self.dim = dim
        self.image_size = image_size
        self.device = device
        self._model = model
        self._tokenizer = tokenizer
        self._transform = transform
        split = _split_transform(transform)
        self._pil_stage, self._tensor_stage = split if split is not None else (None, [])

    def __repr__(self) -> str:
        return (
            f"ClipEncoder(name={self.name!r}, pretrained={self.pretrained!r}, dim={self.dim}, device={self.device!r})"
        )

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(cls, model: str, pretrained: str, device: str = "auto") -> ClipEncoder:
        """Build the model ``model`` with weights ``pretrained`` on ``device``.

        ``model`` is a preset name (:data:`MODEL_PRESETS`) or any open_clip model name.
        ``pretrained`` is an open_clip tag, a checkpoint file, or a folder holding
        ``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``; empty or
        ``"default"`` means the preset's default tag. Random-weight presets ignore it.

        Raises:
            ModelError: unknown model (close matches listed), unknown tag, missing checkpoint
                file, weights that cannot be downloaded (within seconds, with instructions),
                or a checkpoint that does not fit the model.
            ConfigError: the device is unknown or unavailable.
        """
        preset = MODEL_PRESETS.get(model)
        if preset is not None and preset.config is not None:
            if pretrained and pretrained.strip() not in ("default", preset.weights_label):
                logger.debug("model %s has random weights; ignoring pretrained=%r", model, pretrained)
            return cls._create_random(preset, preset.config, resolve_device(device))
        return cls._create_open_clip(model, preset, pretrained, resolve_device(device))

    @classmethod
    def _create_random(cls, preset: ModelPreset, cfg: Mapping[str, Any], device: str) -> ClipEncoder:
        import torch
        from open_clip.model import CLIP
        from open_clip.tokenizer import SimpleTokenizer
        from open_clip.transform import PreprocessCfg, image_transform_v2

        vision_cfg, text_cfg = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(preset.seed)
            clip = CLIP(embed_dim=int(cfg["embed_dim"]), vision_cfg=vision_cfg, text_cfg=text_cfg)
        clip.eval().requires_grad_(False).to(device)
        image_size = int(vision_cfg["image_size"])
        transform = image_transform_v2(PreprocessCfg(size=image_size), is_train=False)
        tokenizer = SimpleTokenizer(context_length=int(text_cfg["context_length"]))
        logger.info("built %s (%s) on %s", preset.name, preset.weights_label, device)
        return cls(
            name=preset.name,
            pretrained=preset.weights_label,
            model=clip,
            tokenizer=tokenizer,
            transform=transform,
            device=device,
            dim=int(cfg["embed_dim"]),
            image_size=image_size,
        )

    @classmethod
    def _create_open_clip(cls, model: str, preset: ModelPreset | None, pretrained: str, device: str) -> ClipEncoder:
        import open_clip

        arch = preset.open_clip_name if preset and preset.open_clip_name else model
        available = open_clip.list_models()
        if arch not in available:
            choices = sorted({*available, *MODEL_PRESETS})
            close = difflib.get_close_matches(model, choices, n=5, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ModelError(
                f"unknown model {model!r}; {hint}Any open_clip model name works "
                f"(open_clip.list_models(), {len(available)} of them), or 'tiny-test' "
                "(random weights, offline, for smoke runs)."
            )
        tag = pretrained.strip()
        if tag in ("", "default"):
            fallback = preset.default_pretrained if preset else None
            if not fallback:
                raise ModelError(
                    f"model {arch} has no default weights; pass --pretrained TAG ({_tag_examples(arch)}) "
                    "or a checkpoint file"
                )
            tag = fallback
        checkpoint, pcfg = _resolve_weights(arch, tag)

        kwargs: dict[str, Any] = {
            "image_mean": pcfg.get("mean"),
            "image_std": pcfg.get("std"),
            "image_interpolation": pcfg.get("interpolation"),
            "image_resize_mode": pcfg.get("resize_mode"),
        }
        model_cfg = open_clip.get_model_config(arch) or {}
        if pcfg.get("quick_gelu") and not model_cfg.get("quick_gelu"):
            # Weights trained with QuickGELU (OpenAI's) give wrong embeddings under plain GELU.
            kwargs["force_quick_gelu"] = True
        try:
            clip, _, transform = open_clip.create_model_and_transforms(
                arch, pretrained=checkpoint, device=device, **kwargs
            )
            tokenizer = open_clip.get_tokenizer(arch)
        except _checkpoint_errors() as exc:
            raise ModelError(
                f"cannot load weights {checkpoint} into {arch}: {_first_line(exc)}. Check that the checkpoint "
                f"belongs to model {arch}, or pass a tag such as {_tag_examples(arch)}."
            ) from exc
        clip.eval().requires_grad_(False)
        size = getattr(clip.visual, "image_size", 224)
        image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        logger.info("loaded %s (%s) on %s", arch, tag, device)
        return cls(
            name=model,
            pretrained=tag if pcfg else os.path.abspath(checkpoint),
            model=clip,
            tokenizer=tokenizer,
            transform=transform,
            device=device,
            dim=int(model_cfg.get("embed_dim") or clip.text_projection.shape[1]),
            image_size=image_size,
        )

    # ----------------------------------------------------------------- preprocessing

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The model's eval transform for one image: a float tensor (3, H, W)."""
        return self._transform(to_rgb(image))

    def _prepare_pixels(self, image: Image.Image) -> Any:
        """Per-image part of preprocessing (thread-safe, torch-free when the transform splits)."""
        rgb = to_rgb(image)
        if self._pil_stage is None:
            return self._transform(rgb)
        return np.asarray(self._pil_stage(rgb), dtype=np.uint8)

    def _collate(self, pixels: Sequence[Any]) -> torch.Tensor:
        """Stack prepared images into one model input batch on the device."""
        import torch

        if self._pil_stage is None:
            return torch.stack(list(pixels)).to(self.device)
        batch = torch.from_numpy(np.stack(pixels)).to(self.device)
        # Same arithmetic as torchvision's to_tensor + Normalize, applied to the whole batch.
        batch = batch.permute(0, 3, 1, 2).contiguous().to(dtype=torch.float32).div(255)
        for step in self._tensor_stage:
            batch = step(batch)
        return batch

    # ----------------------------------------------------------------- encoding

    def _forward_images(self, batch: torch.Tensor) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self._model.encode_image(batch, normalize=True)
        return np.ascontiguousarray(features.float().cpu().numpy(), dtype=np.float32)

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts: float32 (len(texts), dim), rows of unit length. Empty strings are allowed.

        Raises:
            InvalidInputError: ``texts`` is a single string instead of a sequence of them.
        """
        import torch

        if isinstance(texts, str):
            raise InvalidInputError("encode_text takes a list of strings, not a single string")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), TEXT_BATCH_SIZE):
            chunk = [str(t) for t in texts[start : start + TEXT_BATCH_SIZE]]
            tokens = self._tokenizer(chunk).to(self.device)
            with torch.inference_mode():
                features = self._model.encode_text(tokens, normalize=True)
            out[start : start + len(chunk)] = features.float().cpu().numpy()
        return out

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed images (any mode; converted as :func:`~img_agent.embed.images.to_rgb` does).

        Returns float32 (len(images), dim), rows of unit length.
        """
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), IMAGE_BATCH_SIZE):
            chunk = images[start : start + IMAGE_BATCH_SIZE]
            batch = self._collate([self._prepare_pixels(im) for im in chunk])
            out[start : start + len(chunk)] = self._forward_images(batch)
        return out

    def encode_stream(
        self,
        items: Sequence[X],
        load: Callable[[X], tuple[Y, Image.Image]],
        *,
        batch_size: int = 32,
        workers: int = 2,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[EncodedChunk]:
        """Load, preprocess and embed ``items``; yield :class:`EncodedChunk` s in input order.

        ``load(item) -> (payload, image)`` reads and decodes one item (the engine's function:
        read, hash, dedupe, decode). It and the per-image preprocessing run in a pool of
        ``workers`` threads, at most ``max(2 * batch_size, 2 * workers)`` items ahead of the
        model, so memory stays bounded however many items there are; the calling thread runs
        the model on full batches of ``batch_size``. ``workers=0`` loads inline (no threads).
        The payload is kept until its chunk is yielded: it should not hold the image.

        Per-item failures do not stop the stream: a ``load`` raising
        :class:`~img_agent.embed.images.DuplicateContent` becomes a
        :class:`~img_agent.embed.images.DuplicateItem` (reason ``"duplicate: ..."``; count it as
        unchanged), one raising :class:`~img_agent.errors.InvalidInputError` (e.g.
        ``ImageDecodeError``) or ``OSError`` becomes a :class:`SkippedItem` with the error
        text as reason. ``path`` is ``str(item)``. Any other exception is a bug and propagates.

        Each chunk holds one model batch (the last may be smaller, or hold only skips).
        ``progress(done, total, message)`` is called after each chunk. ``cancel`` is checked
        before each item is taken into a batch; once set, the stream ends without encoding
        the partial batch (chunks already yielded stand) and the caller reports the
        cancellation. Results are deterministic: the same items give the same chunks.

        Raises:
            InvalidInputError: ``batch_size`` < 1 or ``workers`` < 0 (at the call, not on first ``next``).
        """
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise InvalidInputError(f"workers must be 0 or more, got {workers}")
        return self._stream(items, load, batch_size=batch_size, workers=workers, progress=progress, cancel=cancel)

    def _stream(
        self,
        items: Sequence[X],
        load: Callable[[X], tuple[Y, Image.Image]],
        *,
        batch_size: int,
        workers: int,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Iterator[EncodedChunk]:
        """The generator behind :meth:`encode_stream` (arguments already checked)."""
        total = len(items)
        if cancel is not None and cancel.is_set():
            return
        if workers == 0:
            outcomes: Iterator[_Prepared | SkippedItem] = (self._prepare(item, load) for item in items)
        else:
            outcomes = self._prepare_in_pool(items, load, workers=workers, window=max(2 * batch_size, 2 * workers))

        payloads: list[Any] = []
        pixels: list[Any] = []
        skipped: list[SkippedItem] = []
        done = encoded = n_skipped = 0
        try:
            for outcome in outcomes:
                if cancel is not None and cancel.is_set():
                    logger.info("encoding cancelled after %d of %d items", done, total)
                    return
                done += 1
                if isinstance(outcome, SkippedItem):
                    skipped.append(outcome)
                    n_skipped += 1
                    continue
                payloads.append(outcome.payload)
                pixels.append(outcome.pixels)
                if len(pixels) == batch_size:
                    vectors = self._forward_images(self._collate(pixels))
                    encoded += len(payloads)
                    yield EncodedChunk(payloads, vectors, skipped)
                    payloads, pixels, skipped = [], [], []
                    _report(progress, done, total, encoded, n_skipped)
            if cancel is not None and cancel.is_set():
                return
            if pixels or skipped:
                vectors = self._forward_images(self._collate(pixels)) if pixels else np.empty((0, self.dim), np.float32)
                encoded += len(payloads)
                yield EncodedChunk(payloads, vectors, skipped)
                _report(progress, done, total, encoded, n_skipped)
        finally:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()

    def _prepare(self, item: X, load: Callable[[X], tuple[Y, Image.Image]]) -> _Prepared | SkippedItem:
        """Load and preprocess one item, turning expected per-item failures into skips."""
        try:
            payload, image = load(item)
        except DuplicateContent as signal:
            return DuplicateItem.from_signal(str(item), signal)
        except InvalidInputError as exc:
            return SkippedItem(path=str(item), reason=str(exc) or type(exc).__name__)
        except OSError as exc:
            return SkippedItem(path=str(item), reason=f"cannot read file: {exc.strerror or exc}")
        try:
            pixels = self._prepare_pixels(image)
        except (ValueError, OSError) as exc:
            return SkippedItem(path=str(item), reason=f"cannot preprocess image: {exc}")
        return _Prepared(payload, pixels)

    def _prepare_in_pool(
        self, items: Sequence[X], load: Callable[[X], tuple[Y, Image.Image]], *, workers: int, window: int
    ) -> Iterator[_Prepared | SkippedItem]:
        """:meth:`_prepare` over ``items`` in a thread pool, in order, at most ``window`` in flight."""
        pending: deque[Future[_Prepared | SkippedItem]] = deque()
        source = iter(items)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="img-agent-decode") as pool:
            try:
                for item in itertools.islice(source, window):
                    pending.append(pool.submit(self._prepare, item, load))
                while pending:
                    outcome = pending.popleft().result()
                    for item in itertools.islice(source, 1):
                        pending.append(pool.submit(self._prepare, item, load))
                    yield outcome
            finally:
                for future in pending:
                    future.cancel()


def _report(progress: ProgressCallback | None, done: int, total: int, encoded: int, skipped: int) -> None:
    if progress is not None:
        progress(done, total, f"encoded {encoded} of {total} images ({skipped} skipped)")


# --------------------------------------------------------------------------- process-wide cache

_cache: dict[tuple[str, str, str], ClipEncoder] = {}
_build_locks: dict[tuple[str, str, str], threading.Lock] = {}
_cache_lock = threading.Lock()


def get_encoder(model: str, pretrained: str, device: str = "auto") -> ClipEncoder:
    """The process-wide encoder for (model, pretrained, device), built on first use.

    Thread-safe: concurrent callers asking for the same model wait for one build. A failed
    build is not cached, so a later call tries again.
    """
    preset = MODEL_PRESETS.get(model)
    weights = pretrained.strip()
    if preset is not None and preset.random_weights:
        weights = preset.weights_label
    elif weights in ("", "default") and preset is not None and preset.default_pretrained:
        weights = preset.default_pretrained
    key = (model, weights, resolve_device(device))
    with _cache_lock:
        encoder = _cache.get(key)
        if encoder is not None:
            return encoder
        lock = _build_locks.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            encoder = _cache.get(key)
        if encoder is None:
            encoder = ClipEncoder.create(model, weights, key[2])
            with _cache_lock:
                _cache[key] = encoder
    return encoder


def clear_encoder_cache() -> None:
    """Forget every cached encoder (tests; freeing a model's memory)."""
    with _cache_lock:
        _cache.clear()
        _build_locks.clear()
