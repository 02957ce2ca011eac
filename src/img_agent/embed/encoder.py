"""CLIP encoders: build a model, preprocess images, embed texts and images into one unit-norm space.

Importing this module does not import torch or open_clip (servers must answer at once); they
are imported on first use, inside the functions that need them.

* :meth:`ClipEncoder.create` builds a model: an open_clip architecture with weights found by
  :mod:`img_agent.embed.weights`, or a random-weight preset (``tiny-test``) built in-process.
* :meth:`ClipEncoder.encode_text` / :meth:`ClipEncoder.encode_images` embed in batches;
  :meth:`ClipEncoder.prepare`, :meth:`ClipEncoder.collate` and :meth:`ClipEncoder.encode_pixels`
  are the three steps of an image batch, for pipelines that spread them over threads
  (:mod:`img_agent.embed.pipeline`).
* :meth:`ClipEncoder.set_inference` picks what encodes images: torch or ONNX Runtime (texts: always torch).
* :func:`get_encoder` caches one encoder per (model, weights, device, inference) per process.
"""

from __future__ import annotations

import difflib
import logging
import pickle
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from img_agent.embed.decode import to_rgb
from img_agent.embed.devices import resolve_device
from img_agent.embed.weights import (
    MODEL_PRESETS,
    ModelPreset,
    resolve_weights,
    tag_examples,
    weights_label,
    weights_tag,
)
from img_agent.errors import InvalidInputError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = ["ClipEncoder", "clear_encoder_cache", "get_encoder", "resolve_device"]

logger = logging.getLogger(__name__)

TEXT_BATCH_SIZE = 256
"""Texts per forward pass in :meth:`ClipEncoder.encode_text`."""
IMAGE_BATCH_SIZE = 32
"""Images per forward pass in :meth:`ClipEncoder.encode_images`."""


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
    (model name as given), ``pretrained`` (the weights label,
    :func:`~img_agent.embed.weights.weights_label`), ``dim`` (embedding size), ``image_size`` (model input side, the
    ``draft_size`` to decode with), ``device`` and ``runtime`` (``"torch"`` or ``"onnxruntime"``: what encodes images).

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
        self._runtime, self._onnx, self._pending = "torch", None, None  # see the runtime property
        self._select_lock = threading.Lock()
        split = _split_transform(transform)
        self._pil_stage, self._tensor_stage = split if split is not None else (None, [])

    def __repr__(self) -> str:
        return (
            f"ClipEncoder(name={self.name!r}, pretrained={self.pretrained!r}, dim={self.dim}, device={self.device!r})"
        )

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(cls, model: str, pretrained: str, device: str = "auto") -> ClipEncoder:
        """Build the model ``model`` with weights ``pretrained`` on ``device`` (images encoded by torch).

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

    def set_inference(self, inference: str = "auto") -> None:
        """Choose what encodes images (``auto``, ``torch`` or ``onnx``; see :mod:`img_agent.embed.onnx_visual`).

        ``auto`` decides at the first image batch (an export takes seconds: text-only use never pays it);
        ``onnx`` decides now, so a missing runtime is an error at once.
        """
        self._onnx, self._runtime = None, "torch"
        self._pending = None if inference == "torch" else inference
        if inference == "onnx":
            self._select_runtime()

    @property
    def runtime(self) -> str:
        """What encodes images: ``"torch"`` or ``"onnxruntime"`` (asking settles a pending ``auto`` choice)."""
        if self._pending is not None:
            self._select_runtime()
        return self._runtime

    def _select_runtime(self) -> None:
        from img_agent.embed.onnx_visual import select_visual_runtime

        with self._select_lock:
            if self._pending is not None:
                self._onnx = select_visual_runtime(self._model, self.name, self.image_size, self.device, self._pending)
                self._runtime, self._pending = "torch" if self._onnx is None else "onnxruntime", None

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
        tag = weights_tag(model, pretrained)
        if not tag:
            raise ModelError(
                f"model {arch} has no default weights; pass --pretrained TAG ({tag_examples(arch)}) "
                "or a checkpoint file"
            )
        checkpoint, pcfg = resolve_weights(arch, tag)

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
                f"belongs to model {arch}, or pass a tag such as {tag_examples(arch)}."
            ) from exc
        clip.eval().requires_grad_(False)
        size = getattr(clip.visual, "image_size", 224)
        image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        logger.info("loaded %s (%s) on %s", arch, tag, device)
        return cls(
            name=model,
            pretrained=weights_label(model, tag),
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

    def prepare(self, image: Image.Image) -> Any:
        """The per-image part of preprocessing (thread-safe; torch-free when the transform splits).

        Its results go to :meth:`collate` as one batch.
        """
        rgb = to_rgb(image)
        if self._pil_stage is None:
            return self._transform(rgb)
        return np.asarray(self._pil_stage(rgb), dtype=np.uint8)

    def collate(self, prepared: Sequence[Any]) -> torch.Tensor:
        """Stack :meth:`prepare` results into one model input batch (n, 3, H, W) on the device."""
        import torch

        if self._pil_stage is None:
            return torch.stack(list(prepared)).to(self.device)
        batch = torch.from_numpy(np.stack(prepared)).to(self.device)
        # Same arithmetic as torchvision's to_tensor + Normalize, applied to the whole batch.
        batch = batch.permute(0, 3, 1, 2).contiguous().to(dtype=torch.float32).div(255)
        for step in self._tensor_stage:
            batch = step(batch)
        return batch

    # ----------------------------------------------------------------- encoding

    def encode_pixels(self, batch: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed batch (from :meth:`collate`, or stacked :meth:`preprocess` tensors).

        Returns float32 (n, dim), rows of unit length.
        """
        import torch

        if self._pending is not None:
            self._select_runtime()
        if (onnx := self._onnx) is not None:
            features = onnx(batch.detach().cpu().numpy())  # None once ONNX Runtime failed: torch from then on
            if features is not None:
                return features
            self._onnx, self._runtime = None, "torch"
        with torch.inference_mode():
            features = self._model.encode_image(batch.to(self.device), normalize=True)
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
            batch = self.collate([self.prepare(im) for im in chunk])
            out[start : start + len(chunk)] = self.encode_pixels(batch)
        return out


# --------------------------------------------------------------------------- process-wide cache

_cache: dict[tuple[str, str, str, str], ClipEncoder] = {}
_build_locks: dict[tuple[str, str, str, str], threading.Lock] = {}
_cache_lock = threading.Lock()


def get_encoder(model: str, pretrained: str, device: str = "auto", inference: str = "auto") -> ClipEncoder:
    """The process-wide encoder for (model, pretrained, device, inference), built on first use.

    Thread-safe: concurrent callers asking for the same model wait for one build. A failed
    build is not cached, so a later call tries again.

    Raises:
        ConfigError: no pretrained tag is given and the model has no default one.
    """
    key = (model, weights_label(model, pretrained), resolve_device(device), inference)
    with _cache_lock:
        encoder = _cache.get(key)
        if encoder is not None:
            return encoder
        lock = _build_locks.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            encoder = _cache.get(key)
        if encoder is None:
            encoder = ClipEncoder.create(model, key[1], key[2])
            encoder.set_inference(inference)
            with _cache_lock:
                _cache[key] = encoder
    return encoder


def clear_encoder_cache() -> None:
    """Forget every cached encoder (tests; freeing a model's memory)."""
    with _cache_lock:
        _cache.clear()
        _build_locks.clear()
