"""ONNX Runtime for a CLIP visual tower on CPU: export once, cache on disk, verify, run.

Importing this module imports neither torch nor onnxruntime; :func:`select_visual_runtime` with
``inference="torch"`` imports neither either.

* :func:`select_visual_runtime` is the policy behind the ``inference`` setting: ``torch`` keeps
  torch; ``onnx`` gives an ONNX Runtime session or raises :class:`~img_agent.errors.ModelError`;
  ``auto`` gives one on CPU when onnxruntime imports and the exported graph matches torch, and
  otherwise logs one warning and keeps torch. Nothing here may break indexing.
* :func:`load_onnx_visual` exports ``encode_image(pixels, normalize=True)`` with a dynamic batch
  axis to ``<cache>/<model>-<digest>.onnx``. The digest covers the visual tower's weights and
  architecture, so random, test and real weights never share a file. Files are written to a
  temporary name in the same folder and renamed into place; a cached file that does not load or
  does not match torch is exported again.
* The check runs a fixed probe batch through torch and ONNX Runtime at every load; every row's
  cosine similarity must reach :data:`MIN_COSINE`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from img_agent.errors import ConfigError, ModelError
from img_agent.locations import user_cache_dir

if TYPE_CHECKING:
    import torch

__all__ = [
    "INFERENCE_CHOICES",
    "MIN_COSINE",
    "OnnxVisual",
    "OnnxVisualError",
    "default_cache_dir",
    "load_onnx_visual",
    "select_visual_runtime",
    "visual_digest",
]

logger = logging.getLogger(__name__)

INFERENCE_CHOICES = ("auto", "torch", "onnx")
MIN_COSINE = 0.9999
"""Lowest cosine similarity between torch and ONNX Runtime embeddings of the probe batch."""
OPSET = 17
EXPORT_FORMAT = 1
"""Part of every cache key: raise it when the exported graph changes, so old files are not reused."""
_INPUT, _OUTPUT = "pixels", "embeddings"
_PROBE_BATCHES = (3, 1)
"""Probe batch sizes: two sizes check that the batch axis is really dynamic."""

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()
_export_lock = threading.Lock()


class OnnxVisualError(ModelError):
    """The visual tower cannot be exported, loaded or verified under ONNX Runtime."""


def default_cache_dir() -> Path:
    """Per-user cache folder for exported graphs (see :func:`~img_agent.locations.user_cache_dir`)."""
    return user_cache_dir() / "onnx"


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _import_ort() -> Any:
    import onnxruntime

    return onnxruntime


def visual_digest(clip: torch.nn.Module) -> str:
    """SHA-256 of the visual tower: architecture (its repr), every tensor's name, dtype, shape and bytes."""
    import torch

    visual = clip.visual
    digest = hashlib.sha256(f"format={EXPORT_FORMAT};opset={OPSET};{visual!r}".encode())
    for name, tensor in visual.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()


class OnnxVisual:
    """An ONNX Runtime session embedding preprocessed pixel batches (n, 3, H, W) into unit-norm rows.

    ``path`` is the graph file. Calls are safe from several threads at once.
    """

    def __init__(self, session: Any, path: Path) -> None:
        self.session = session
        self.path = path

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """Float32 (n, dim) embeddings.

        Raises:
            OnnxVisualError: ONNX Runtime failed on this batch.
        """
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        try:
            (out,) = self.session.run([_OUTPUT], {_INPUT: batch})
        except Exception as exc:  # onnxruntime's exception types derive from Exception only
            raise OnnxVisualError(f"ONNX Runtime failed on a batch of shape {batch.shape}: {exc}") from exc
        return np.ascontiguousarray(out, dtype=np.float32)

    def __call__(self, pixels: np.ndarray) -> np.ndarray | None:
        """:meth:`run`, or None after logging a warning when ONNX Runtime fails (callers then use torch)."""
        try:
            return self.run(pixels)
        except OnnxVisualError as exc:
            logger.warning("%s; encoding images with torch from now on", exc)
            return None


def session_options(ort: Any, *, threads: int | None = None, level: str = "all", spinning: bool = False) -> Any:
    """Session options: ``threads`` intra-op threads (default: the usable cores), graph optimisation ``level``
    (``all``, ``extended``, ``basic`` or ``none``), sequential execution. Idle threads sleep instead of
    spinning unless ``spinning``: image decoding runs on the same cores between batches."""
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[level]
    options.intra_op_num_threads = threads or _cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _export(clip: torch.nn.Module, path: Path, image_size: int) -> None:
    """Export ``clip.encode_image(pixels, normalize=True)`` to ``path``, atomically (temp file + rename)."""
    import torch

    class _Visual(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(pixels, normalize=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.float32)
    # The fused attention kernel of nn.MultiheadAttention has no ONNX form; the exporter must trace the plain ops.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        with _export_lock, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.backends.mha.set_fastpath_enabled(False)
            torch.onnx.export(
                _Visual(clip).eval(), (example,), tmp, dynamo=False, opset_version=OPSET,
                input_names=[_INPUT], output_names=[_OUTPUT],
                dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
            )
        os.replace(tmp, path)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def probe_pixels(image_size: int, n: int) -> np.ndarray:
    """A fixed batch of ``n`` normalised-pixel-like inputs (standard normal, generator 0)."""
    return np.random.default_rng(0).standard_normal((n, 3, image_size, image_size), dtype=np.float32)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Lowest row-wise cosine similarity between two (n, d) arrays (0 when shapes differ or values are not finite)."""
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.min(np.sum(a64 * b64, axis=1) / np.maximum(norms, 1e-30)))


def _verify(visual: OnnxVisual, clip: torch.nn.Module, image_size: int) -> float:
    import torch

    worst = 1.0
    for n in _PROBE_BATCHES:
        pixels = probe_pixels(image_size, n)
        with torch.inference_mode():
            expected = clip.encode_image(torch.from_numpy(pixels), normalize=True).float().numpy()
        worst = min(worst, min_cosine(visual.run(pixels), expected))
    return worst


def _open(ort: Any, path: Path, clip: torch.nn.Module, image_size: int, options: dict[str, Any]) -> OnnxVisual:
    try:
        session = ort.InferenceSession(str(path), session_options(ort, **options), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        raise OnnxVisualError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    visual = OnnxVisual(session, path)
    worst = _verify(visual, clip, image_size)
    if worst < MIN_COSINE:
        raise OnnxVisualError(f"ONNX Runtime embeddings differ from torch (min cosine {worst:.6f} < {MIN_COSINE})")
    return visual


def cache_path(clip: torch.nn.Module, name: str, cache_dir: Path | None = None) -> Path:
    """Where the graph of ``clip``'s visual tower is cached."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return (cache_dir or default_cache_dir()) / f"{safe}-{visual_digest(clip)[:24]}.onnx"


def load_onnx_visual(
    clip: torch.nn.Module, name: str, image_size: int, *, cache_dir: Path | None = None, **options: Any
) -> OnnxVisual:
    """A verified ONNX Runtime session for ``clip``'s visual tower (CPU), exported on first use.

    ``options`` go to :func:`session_options`. A cached graph that fails to load or verify is
    exported again once.

    Raises:
        ImportError: onnxruntime (or the exporter's dependencies) is not installed.
        OnnxVisualError: export, session or verification failed.
    """
    ort = _import_ort()
    path = cache_path(clip, name, cache_dir)
    if path.is_file():
        try:
            return _open(ort, path, clip, image_size, options)
        except OnnxVisualError as exc:
            logger.info("cached ONNX graph %s is unusable (%s); exporting again", path, exc)
    try:
        _export(clip, path, image_size)
    except ImportError:
        raise
    except Exception as exc:  # the exporter raises many types (unsupported ops, tracing, I/O)
        raise OnnxVisualError(f"cannot export the visual tower of {name} to ONNX: {exc}") from exc
    logger.info("exported the visual tower of %s to %s", name, path)
    return _open(ort, path, clip, image_size, options)


def _warn_once(name: str, message: str) -> None:
    with _warned_lock:
        if (name, message) in _warned:
            return
        _warned.add((name, message))
    logger.warning("%s", message)


def select_visual_runtime(
    clip: torch.nn.Module, name: str, image_size: int, device: str, inference: str = "auto",
    *, cache_dir: Path | None = None,
) -> OnnxVisual | None:
    """The ONNX Runtime session that should encode images, or None for torch (see the module docstring).

    Raises:
        ConfigError: ``inference`` is not one of :data:`INFERENCE_CHOICES`.
        ModelError: ``inference="onnx"`` and ONNX Runtime cannot be used; the message says why.
    """
    if inference not in INFERENCE_CHOICES:
        raise ConfigError(f"unknown inference runtime {inference!r}; use auto, torch or onnx")
    if inference == "torch":
        return None
    if device != "cpu":
        if inference == "onnx":
            raise ModelError(
                f"inference 'onnx' runs on CPU only, but the device is {device!r}; "
                "use --device cpu, or IMG_AGENT_INFERENCE=torch (or auto) on this device."
            )
        return None
    try:
        return load_onnx_visual(clip, name, image_size, cache_dir=cache_dir)
    except ImportError as exc:
        reason = (
            f"ONNX Runtime is not installed ({exc}); install it with 'pip install onnxruntime onnx', "
            "or set IMG_AGENT_INFERENCE=torch."
        )
    except OnnxVisualError as exc:
        reason = f"{exc}. Set IMG_AGENT_INFERENCE=torch to skip ONNX Runtime."
    if inference == "onnx":
        raise ModelError(f"inference 'onnx' asked for, but {reason}")
    _warn_once(name, f"ONNX Runtime not used for {name}; encoding images with torch: {reason}")
    return None
