"""Ingestion benchmark: images/s from a folder of JPEGs into the index.

Three ways of encoding the same generated photos (``img_agent.testing.make_images`` patterns at
640×480, all saved as JPEG quality 90), with ViT-B-32 built from its open_clip config with random
weights (``open_clip.create_model('ViT-B-32', pretrained=None)``: no download; speed does not
depend on the weights):

- **model only**: ``ClipEncoder.encode_pixels`` on batches decoded and pre-processed beforehand — the
  ceiling; once with torch (eager, fp32) and once with ONNX Runtime (``inference="onnx"``, the same weights
  exported by :mod:`img_agent.embed.onnx_visual`), with their ratio and the largest cosine deviation between
  the two runtimes' embeddings (target: ONNX Runtime ≥ 1.5× torch);
- **engine pipeline**: ``Engine.add_paths(folder)`` — read, hash, dedupe, decode (JPEG draft
  mode), preprocess in worker threads while the model runs, then commit vectors + catalog rows;
  also the ``Pipeline`` alone (``encode_stream`` in the results: the same path without the store);
- **naive loop**: one image at a time — ``Image.open().convert()``, then ``encode_images([image])``,
  a batch of one — as a first script would do (on the first 128 images: its rate does not depend on
  count).

Each way runs twice, alternating with the others, and its better round is reported (the rounds
are in the JSON): on a shared machine other processes only ever slow a round down.

Targets: pipeline ≥ 90 % of model-only throughput, and ≥ 5× the naive loop.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench.common import Progress, ProgressBar, command_line, no_progress, write_result
from img_agent.bench.metrics import Timer


def make_jpegs(folder: Path, n: int, *, size: tuple[int, int] = (640, 480), seed: int = 0, quality: int = 90) -> list[Path]:
    """``n`` generated photos as JPEG (``make_images`` writes every third one as PNG: re-saved here)."""
    from PIL import Image

    from img_agent.testing import make_images

    out = []
    for p in make_images(folder, n, seed=seed, size=size):
        if p.suffix.lower() != ".jpg":
            q = p.with_suffix(".jpg")
            with Image.open(p) as im:
                im.convert("RGB").save(q, quality=quality)
            p.unlink()
            p = q
        out.append(p)
    return out


def random_encoder(model: str = "ViT-B-32", device: str = "cpu"):
    """A :class:`~img_agent.embed.encoder.ClipEncoder` for ``model`` with seeded random weights.

    ``tiny-test`` uses the package's own preset; any other open_clip name is built from its config
    with ``pretrained=None`` (never downloads). Same compute as the real model, meaningless vectors.
    """
    from img_agent.embed.encoder import ClipEncoder
    from img_agent.embed.weights import MODEL_PRESETS

    preset = MODEL_PRESETS.get(model)
    if preset is not None and preset.random_weights:
        return ClipEncoder.create(model, "", device)
    import open_clip
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clip, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None)
    clip.eval().requires_grad_(False).to(device)
    tokenizer = open_clip.get_tokenizer(model)
    size = clip.visual.image_size
    image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    dim = int(clip.visual.output_dim)
    return ClipEncoder(name=model, pretrained="random-weights-bench", model=clip, tokenizer=tokenizer,
                       transform=preprocess, device=device, dim=dim, image_size=image_size)


def model_only(encoder, paths: list[Path], batch_size: int) -> dict:
    """Forward throughput on tensors decoded and pre-processed beforehand (not timed)."""
    import torch
    from PIL import Image

    tensors = []
    for p in paths:
        with Image.open(p) as im:
            tensors.append(encoder.preprocess(im.convert("RGB")))
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    encoder.encode_pixels(batches[0])  # warm-up
    with Timer() as t:
        for b in batches:
            encoder.encode_pixels(b)
    return {"images": len(paths), "seconds": round(t.s, 3), "images_per_s": round(len(paths) / t.s, 2)}


def onnx_twin(encoder) -> tuple[Any, dict]:
    """The same encoder (same torch model) with images encoded by ONNX Runtime, and how getting it went."""
    import copy

    twin = copy.copy(encoder)
    with Timer() as t:
        try:
            twin.set_inference("onnx")
        except Exception as exc:  # reported in the result; the torch ways still run
            return None, {"error": str(exc), "seconds": round(t.s, 3)}
    return twin, {"seconds": round(t.s, 3), "graph": str(twin._onnx.path)}


def max_cosine_deviation(torch_encoder, onnx_encoder, paths: list[Path]) -> float:
    """``1 - min cosine`` between the two encoders' embeddings of ``paths``."""
    from PIL import Image

    from img_agent.embed.onnx_visual import min_cosine

    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    return float(1.0 - min_cosine(onnx_encoder.encode_images(images), torch_encoder.encode_images(images)))


def naive_loop(encoder, paths: list[Path]) -> dict:
    """One image at a time: open, convert, encode (a batch of one)."""
    from PIL import Image

    def one(p: Path) -> np.ndarray:
        im = Image.open(p).convert("RGB")
        return encoder.encode_images([im])[0]

    one(paths[0])  # warm-up
    with Timer() as t:
        for p in paths:
            one(p)
    return {"images": len(paths), "seconds": round(t.s, 3), "images_per_s": round(len(paths) / t.s, 2)}


def stream_only(encoder, paths: list[Path], batch_size: int, workers: int) -> dict:
    """The engine's :class:`~img_agent.embed.pipeline.Pipeline` alone (read, decode, encode), without a store."""
    from img_agent.embed.pipeline import Encoded, Pipeline

    count = 0
    with Timer() as t:
        with Pipeline(encoder, max_bytes=200 * 2**20, max_pixels=100_000_000, batch_size=batch_size,
                      workers=workers) as pipeline:
            for out in pipeline.encode(pipeline.read(paths)):
                if isinstance(out, Encoded):
                    count += len(out.vectors)
    return {"images": count, "seconds": round(t.s, 3), "images_per_s": round(count / t.s, 2)}


def engine_pipeline(encoder, folder: Path, store: Path, batch_size: int, workers: int) -> dict:
    """``Engine.add_paths(folder)`` into a fresh store: the whole ingestion path, durable."""
    from img_agent.config import Settings
    from img_agent.index.engine import Engine

    settings = Settings(data_dir=store, model=encoder.name, batch_size=batch_size, workers=workers)
    with Engine.open(settings, encoder=encoder) as engine:
        with Timer() as t:
            rep = engine.add_paths([folder])
    n = len(rep.added)
    return {"images": n, "skipped": len(rep.skipped), "seconds": round(t.s, 3),
            "images_per_s": round(n / t.s, 2)}


def run_ingest(*, images: int, size: tuple[int, int], model: str, batch_size: int, workers: int, seed: int = 0,
               rounds: int = 2, progress: Progress = no_progress) -> dict:
    import torch

    out: dict = {"images": images, "size": f"{size[0]}x{size[1]}", "model": model, "batch_size": batch_size,
                 "workers": workers, "torch_threads": torch.get_num_threads(), "weights": "random (no download)"}
    root = Path(tempfile.mkdtemp(prefix="img-agent-ingest-"))
    try:
        folder = root / "images"
        progress(0, f"writing {images} JPEGs")
        with Timer() as t:
            paths = make_jpegs(folder, images, size=size, seed=seed)
        out["generate_s"] = round(t.s, 2)
        out["mean_file_kb"] = round(float(np.mean([p.stat().st_size for p in paths])) / 1024, 1)
        progress(1, "images")
        enc = random_encoder(model)
        out["dim"] = enc.dim
        naive_paths = paths[: max(8, min(len(paths), 128))]
        out["naive_images"] = len(naive_paths)
        progress(0, "ONNX Runtime session (exported on first use)")
        enc_onnx, out["onnx_session"] = onnx_twin(enc)
        ways = {
            "model_only": lambda r: model_only(enc, paths, batch_size),
            **({"model_only_onnx": lambda r: model_only(enc_onnx, paths, batch_size)} if enc_onnx else {}),
            "engine_pipeline": lambda r: engine_pipeline(enc, folder, root / f"store{r}", batch_size, workers),
            "encode_stream": lambda r: stream_only(enc, paths, batch_size, workers),
            "naive_loop": lambda r: naive_loop(enc, naive_paths),
        }
        # Alternate the ways over `rounds` rounds and keep each one's best round: on a shared machine
        # other processes only ever slow a round down, and alternating spreads that over all ways.
        for r in range(rounds):
            for name, fn in ways.items():
                progress(0, f"round {r + 1}: {name}")
                res = fn(r)
                out.setdefault("rounds", {}).setdefault(name, []).append(res["images_per_s"])
                if name not in out or res["images_per_s"] > out[name]["images_per_s"]:
                    out[name] = res
                progress(1, name)
        m, e, nv = (out[k]["images_per_s"] for k in ("model_only", "engine_pipeline", "naive_loop"))
        out["pipeline_vs_model"] = round(e / m, 3)
        out["stream_vs_model"] = round(out["encode_stream"]["images_per_s"] / m, 3)
        out["pipeline_vs_naive"] = round(e / nv, 2)
        out["meets_90pct_of_model"] = e >= 0.9 * m
        out["meets_5x_naive"] = e >= 5 * nv
        if enc_onnx is not None:
            out["onnx_vs_torch"] = round(out["model_only_onnx"]["images_per_s"] / m, 3)
            out["meets_1_5x_onnx"] = out["onnx_vs_torch"] >= 1.5
            out["onnx_max_cosine_deviation"] = max_cosine_deviation(enc, enc_onnx, paths[:64])
            del enc_onnx
        del enc
        gc.collect()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def run(options: Any) -> Path:
    """``bench ingest``: the four ways of encoding a folder; writes ingest.json / .md / plot, returns ingest.md."""
    from img_agent.bench import report

    t0 = time.time()
    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    images = options.images or (24 if options.quick else 512)
    size = options.size or ((160, 120) if options.quick else (640, 480))
    model = getattr(options, "model", None) or ("tiny-test" if options.quick else "ViT-B-32")
    workers = options.workers if options.workers is not None else (os.cpu_count() or 1)
    batch = 8 if options.quick and options.batch_size == 32 else options.batch_size
    result = report.new_result("ingest", command=command_line(options), quick=options.quick,
                               config={"images": images, "size": size, "model": model, "batch_size": batch,
                                       "workers": workers})
    rounds = 1 if options.quick else 2
    bar = ProgressBar(2 + 5 * rounds, "ingest", not options.no_progress)
    try:
        result["run"] = run_ingest(images=images, size=size, model=model, batch_size=batch, workers=workers,
                                   seed=options.seed, rounds=rounds, progress=bar)
    finally:
        bar.close()
    report.finish_result(result, t0)
    result["plots"] = report.ingest_plots(result, out)
    return write_result(out, "ingest", result, report.ingest_markdown(result) + onnx_markdown(result["run"]))


def onnx_markdown(r: dict) -> str:
    """The model-only comparison of torch and ONNX Runtime, as a markdown section."""
    session = r.get("onnx_session", {})
    if "model_only_onnx" not in r:
        return f"\n## ONNX Runtime\n\nnot measured: {session.get('error', 'no session')}\n"
    from img_agent.bench.report import md_table

    rows = [["torch eager fp32", r["model_only"]["images_per_s"], r["rounds"]["model_only"]],
            ["ONNX Runtime fp32", r["model_only_onnx"]["images_per_s"], r["rounds"]["model_only_onnx"]]]
    return "\n".join([
        "", "## Model only: torch vs ONNX Runtime", "",
        md_table(["runtime", "images/s (best)", "rounds"], rows), "",
        f"ONNX Runtime / torch: **{r['onnx_vs_torch']}×** (target ≥ 1.5: {r['meets_1_5x_onnx']}); largest cosine "
        f"deviation between the runtimes' embeddings: {r['onnx_max_cosine_deviation']:.2e}; session ready in "
        f"{session.get('seconds')} s (export included on first use).", "",
    ])
