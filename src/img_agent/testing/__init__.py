"""Test and benchmark helpers that ship with the package: generated images and vectors, and fakes.

- this module: :func:`make_images`, :func:`clip_like_vectors`, :class:`StubEncoder`;
- :mod:`~img_agent.testing.fake_engine`: the one engine double (scripted rankings or real files);
- :mod:`~img_agent.testing.fake_llm`: a scripted OpenAI-compatible server on 127.0.0.1;
- :mod:`~img_agent.testing.fake_tools`: two tool schemas and a recording dispatcher for chat tests.

Nothing here touches the network beyond 127.0.0.1. Used by the test-suite, the benchmarks and
offline smoke runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int, *, seed: int = 0, size: tuple[int, int] = (96, 72)) -> list[Path]:
    """Write ``n`` distinct images under ``folder`` (every third one PNG, every fourth in ``sub/``).

    Each image is a seeded mix of a colour gradient, a block pattern and noise, so images differ
    from one another in ways a vision model can see.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = rng.integers(0, 256, size=3)
        grad = (xx / max(w - 1, 1))[..., None] * rng.integers(-128, 128, size=3)
        grad = grad + (yy / max(h - 1, 1))[..., None] * rng.integers(-128, 128, size=3)
        cells = rng.integers(2, 9)
        block = ((xx * cells // w + yy * cells // h) % 2)[..., None] * rng.integers(0, 96, size=3)
        noise = rng.normal(0, 12, size=(h, w, 3))
        arr = np.clip(base + grad + block + noise, 0, 255).astype(np.uint8)
        sub = folder / "sub" if i % 4 == 3 else folder
        sub.mkdir(parents=True, exist_ok=True)
        ext = "png" if i % 3 == 2 else "jpg"
        path = sub / f"img_{i:04d}.{ext}"
        Image.fromarray(arr, "RGB").save(path)
        paths.append(path)
    return paths


def clip_like_vectors(n: int, dim: int = 512, *, seed: int = 0, clusters: int | None = None, spread: float = 0.6) -> np.ndarray:
    """Seeded synthetic CLIP-like embeddings: unit vectors drawn around random cluster centres.

    ``clusters`` defaults to about sqrt(n); ``spread`` is the noise scale relative to the
    centre (0 = all points on their centre). Returns float32 (n, dim), rows L2-normalised.
    """
    rng = np.random.default_rng(seed)
    k = clusters or max(1, int(np.sqrt(n)))
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    step = 65536
    for start in range(0, n, step):
        stop = min(n, start + step)
        assign = rng.integers(0, k, size=stop - start)
        noise = rng.standard_normal((stop - start, dim)).astype(np.float32) * (spread / np.sqrt(dim))
        block = centres[assign] + noise
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


class StubEncoder:
    """The encoder of a store fed only precomputed vectors (``add_vectors``): it names a model and a
    dimension for the catalog and never encodes."""

    name = "stub"
    pretrained = "none"
    image_size = 32

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim
