"""``bench duplicates``: does the default duplicate threshold tell edited copies from distinct images, and
how long does ``find_duplicates`` take?

Two parts, both through the public :class:`~img_agent.index.engine.Engine`:

1. **copies** — ``images`` generated 320x240 pictures (:func:`img_agent.testing.make_images`), each
   saved again after four edits: re-encoded (``reencode_q60``), halved (``resize_50``), cropped by
   5 % and by 10 % of the width and height on every side (``crop_5pct``, ``crop_10pct``); every edit
   is saved as a JPEG of quality 60. All are indexed with ``Engine.add_paths`` under ``model``
   (default tiny-test) and their stored vectors read back. Reported per edit: min / p5 / median
   cosine of a copy to its original and the share of copies at or above
   :data:`~img_agent.results.DEFAULT_DUPLICATE_THRESHOLD`; over the pairs of distinct originals:
   max / p99 / median cosine and the share at or above it; and what ``find_duplicates`` groups in
   that store (how many copies land in their original's group, how many distinct originals share one).
2. **timing** — ``vectors`` synthetic CLIP-like vectors (the ``clip`` model of
   :mod:`~img_agent.bench.synthetic` without its own near-duplicates, so distinct vectors stay below
   the threshold) of which some are planted copies: one group per 200 vectors, of 2, 3 or 4
   vectors in turn, each copy at cosine 0.97-0.999 to its original. Added with
   ``Engine.add_vectors``; ``find_duplicates`` is timed with every vector in the exact buffer (an
   exact flat index built for the call), then again after ``merge`` (the Flat main index, which the
   ``auto`` rule builds up to 50,000 vectors; an IVF or HNSW index above that leaves the method
   ``exact flat``). The groups found are compared with the planted ones.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from img_agent.bench.common import Progress, ProgressBar, command_line, no_progress, write_result
from img_agent.bench.metrics import percentile

IMAGE_SIZE = (320, 240)
JPEG_QUALITY = 60
GROUP_EVERY = 200
"""One planted duplicate group per this many synthetic vectors."""
COPY_NOISE = (0.05, 0.25)
"""Range of a planted copy's orthogonal offset: cosine to its original 1/sqrt(1 + e²), 0.97-0.999."""
STUB_DIM = 512


def _crop(fraction: float) -> Callable[[Any], Any]:
    def crop(im: Any) -> Any:
        dx, dy = int(im.width * fraction), int(im.height * fraction)
        return im.crop((dx, dy, im.width - dx, im.height - dy))

    return crop


def _half(im: Any) -> Any:
    from PIL import Image

    return im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)


EDITS: dict[str, Callable[[Any], Any]] = {
    "reencode_q60": lambda im: im,
    "resize_50": _half,
    "crop_5pct": _crop(0.05),
    "crop_10pct": _crop(0.10),
}
"""Edit kinds: what is done to an image before it is saved again as a JPEG of quality 60."""


def _stats(values: np.ndarray, threshold: float, low: bool) -> dict[str, Any]:
    """min / p5 / median (``low``: copies) or max / p99 / median (distinct pairs), and the share >= threshold."""
    v = np.asarray(values, dtype=np.float64)
    tail = {"min": float(v.min()), "p5": percentile(v, 5)} if low else {"max": float(v.max()), "p99": percentile(v, 99)}
    out = {k: round(x, 4) for k, x in {**tail, "median": percentile(v, 50)}.items()}
    out["count"] = int(v.size)
    out["at_or_above_threshold"] = round(float(np.mean(v >= threshold)), 4)
    return out


def measure_copies(images: int, model: str, work: Path, *, seed: int = 0, pretrained: str | None = None,
                   progress: Progress = no_progress) -> dict[str, Any]:
    """Part 1 (see the module docstring) on a store under ``work``."""
    from PIL import Image

    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.results import DEFAULT_DUPLICATE_THRESHOLD as threshold
    from img_agent.testing import make_images

    originals = make_images(work / "images" / "original", images, seed=seed, size=IMAGE_SIZE)
    copies: dict[str, list[Path]] = {}
    for name, edit in EDITS.items():
        copies[name] = []
        for path in originals:
            target = work / "images" / name / f"{path.stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as im:
                edit(im.convert("RGB")).save(target, quality=JPEG_QUALITY)
            copies[name].append(target)
    progress(1, "images written")
    settings = Settings(data_dir=work / "store", model=model,
                        **({"pretrained": pretrained} if pretrained else {}))
    t0 = time.perf_counter()
    with Engine.open(settings) as engine:
        added = engine.add_paths([work / "images"])
        encode_s = time.perf_counter() - t0
        if added.skipped:
            raise RuntimeError(f"images were not indexed: {added.skipped[:3]}")
        ids = [int(i) for i in added.added]
        id_of = {rec.path: rec.id for rec in engine.get(ids)}
        vectors = dict(zip(ids, engine.store.get(np.asarray(ids, dtype=np.int64)), strict=True))
        progress(1, "images indexed")
        report = engine.find_duplicates()
    progress(1, "find_duplicates (images)")

    def stack(paths: list[Path]) -> np.ndarray:
        return np.stack([vectors[id_of[str(p.resolve())]] for p in paths])

    orig = stack(originals)
    out: dict[str, Any] = {"model": model, "images": images, "image_size": list(IMAGE_SIZE), "threshold": threshold,
                           "indexed": len(ids), "index_seconds": round(encode_s, 2), "edits": {}}
    for name, paths in copies.items():
        out["edits"][name] = _stats(np.sum(orig * stack(paths), axis=1), threshold, low=True)
    upper = np.triu_indices(len(orig), k=1)
    out["distinct"] = _stats((orig @ orig.T)[upper], threshold, low=False) if len(orig) > 1 else None
    group_of = {i: g for g, grp in enumerate(report.groups) for i in (grp.keeper, *grp.extras)}
    orig_ids = [id_of[str(p.resolve())] for p in originals]
    with_original = sum(
        1 for paths in copies.values() for o, p in zip(orig_ids, paths, strict=True)
        if o in group_of and group_of.get(id_of[str(p.resolve())]) == group_of[o]
    )
    groups_of_originals = [group_of[o] for o in orig_ids if o in group_of]
    out["find_duplicates"] = {
        "groups": report.total_groups, "extras": report.total_extras, "method": report.method,
        "seconds": report.seconds,
        "copies_grouped_with_original": round(with_original / (len(EDITS) * len(originals)), 4),
        "originals_sharing_a_group": len(groups_of_originals) - len(set(groups_of_originals)),
    }
    return out


def planted_vectors(n: int, dim: int = STUB_DIM, *, seed: int = 0) -> tuple[np.ndarray, list[list[int]]]:
    """``n`` unit vectors and the planted groups (row numbers, original first); copies are the last rows."""
    from img_agent.bench.synthetic import ClipModelParams, synthetic

    n_groups = max(1, n // GROUP_EVERY) if n >= 4 else 0
    sizes = [2 + g % 3 for g in range(n_groups)]
    n_copies = sum(s - 1 for s in sizes)
    base_n = n - n_copies
    base = synthetic(base_n, dim, kind="clip", seed=seed, params=ClipModelParams(dup_fraction=0.0))
    rng = np.random.default_rng([seed, 7])
    origins = rng.choice(base_n, size=n_groups, replace=False)
    x = np.empty((n, dim), dtype=np.float32)
    x[:base_n] = base
    groups: list[list[int]] = []
    row = base_n
    for origin, size in zip(origins, sizes, strict=True):
        v = base[origin].astype(np.float64)
        members = [int(origin)]
        for _ in range(size - 1):
            g = rng.standard_normal(dim)
            g -= (g @ v) * v
            copy = v + rng.uniform(*COPY_NOISE) * g / np.linalg.norm(g)
            x[row] = copy / np.linalg.norm(copy)
            members.append(row)
            row += 1
        groups.append(members)
    return x, groups


def time_find_duplicates(n: int, work: Path, *, seed: int = 0, threads: int = 0,
                         progress: Progress = no_progress) -> dict[str, Any]:
    """Part 2 (see the module docstring) on a store under ``work``."""
    import faiss

    from img_agent.config import Settings
    from img_agent.index.engine import Engine
    from img_agent.testing import StubEncoder

    x, planted = planted_vectors(n, seed=seed)
    progress(1, f"{n:,} vectors generated")
    old_threads = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(threads)
    out: dict[str, Any] = {"vectors": n, "dim": STUB_DIM, "planted_groups": len(planted),
                           "planted_copies": sum(len(g) - 1 for g in planted), "threads": faiss.omp_get_max_threads()}
    settings = Settings(data_dir=work / "vectors", model=StubEncoder.name, merge_threshold=10**12)
    try:
        with Engine.open(settings, encoder=StubEncoder(STUB_DIM)) as engine:
            t0 = time.perf_counter()
            ids = engine.add_vectors(x, [f"/bench/duplicates/v_{i:08d}.jpg" for i in range(n)])
            out["add_seconds"] = round(time.perf_counter() - t0, 3)
            want = {frozenset(ids[r] for r in g) for g in planted}
            runs = []
            for phase in ("buffer", "merged"):
                if phase == "merged":
                    t0 = time.perf_counter()
                    engine.merge()
                    out["merge_seconds"] = round(time.perf_counter() - t0, 3)
                t0 = time.perf_counter()
                report = engine.find_duplicates()
                seconds = time.perf_counter() - t0
                found = {frozenset((g.keeper, *g.extras)) for g in report.groups}
                runs.append({"phase": phase, "method": report.method, "seconds": round(seconds, 3),
                             "groups": report.total_groups, "extras": report.total_extras,
                             "planted_found": len(want & found), "other_groups": len(found - want)})
                progress(1, f"find_duplicates ({phase})")
            out["runs"] = runs
            out["index"] = engine.status().index
    finally:
        faiss.omp_set_num_threads(old_threads)
    return out


def markdown(result: dict) -> str:
    """The report: the copies table, the distinct pairs, the image store's groups and the timings."""
    from img_agent.bench import report

    r = result["run"]
    c, t = r["copies"], r["timing"]
    th = c["threshold"]
    lines = ["# Duplicate detection benchmark", "", report.meta_markdown(result["meta"]), "",
             (f"## Cosine of edited copies to their original ({c['model']}, {c['images']} generated "
              f"{c['image_size'][0]}x{c['image_size'][1]} images; threshold {th})"), ""]
    rows = [(name, f"{e['min']:.4f}", f"{e['p5']:.4f}", f"{e['median']:.4f}", f"{e['at_or_above_threshold']:.1%}")
            for name, e in c["edits"].items()]
    lines += [report.md_table(("edit", "min", "p5", "median", f">= {th}"), rows), ""]
    d = c["distinct"]
    if d:
        lines += [report.md_table(("distinct pairs", "max", "p99", "median", f">= {th}"),
                                  [(f"{d['count']:,}", f"{d['max']:.4f}", f"{d['p99']:.4f}", f"{d['median']:.4f}",
                                    f"{d['at_or_above_threshold']:.1%}")]), ""]
    f = c["find_duplicates"]
    lines += [(f"find_duplicates on these {c['indexed']} images: groups {f['groups']}, extras {f['extras']}; "
               f"{f['copies_grouped_with_original']:.1%} of the copies grouped with their original; "
               f"{f['originals_sharing_a_group']} distinct originals in another original's group "
               f"({f['method']}, {f['seconds']:.3f} s)."), "",
              (f"## find_duplicates time ({t['vectors']:,} synthetic {t['dim']}-d vectors, {t['planted_groups']} "
               f"planted groups with {t['planted_copies']} copies, {t['threads']} threads)"), ""]
    rows = [(x["phase"], x["method"], f"{x['seconds']:.3f}", x["groups"], x["extras"],
             f"{x['planted_found']}/{t['planted_groups']}", x["other_groups"]) for x in t["runs"]]
    lines += [report.md_table(("state", "method", "seconds", "groups", "extras", "planted found", "other groups"),
                              rows), "",
              (f"add_vectors {t['add_seconds']:.2f} s, merge {t.get('merge_seconds', 0):.2f} s "
               f"(main index: {t.get('index') or '?'})."), ""]
    return "\n".join(lines)


def run(options: Any) -> Path:
    """``bench duplicates``: writes duplicates.json / duplicates.md into ``options.out``; returns duplicates.md."""
    from img_agent.bench import report

    out: Path = options.out
    out.mkdir(parents=True, exist_ok=True)
    images = getattr(options, "images", None) or (12 if options.quick else 60)
    vectors = getattr(options, "vectors", None) or (2_000 if options.quick else 20_000)
    model = getattr(options, "model", None) or "tiny-test"
    t0 = time.time()
    result = report.new_result("duplicates", command=command_line(options), quick=options.quick,
                               config={"images": images, "vectors": vectors, "model": model, "seed": options.seed})
    bar = ProgressBar(6, "duplicates", not options.no_progress)
    work = Path(tempfile.mkdtemp(prefix="img-agent-bench-duplicates-"))
    try:
        copies = measure_copies(images, model, work, seed=options.seed,
                                pretrained=getattr(options, "pretrained", None), progress=bar)
        timing = time_find_duplicates(vectors, work, seed=options.seed, threads=getattr(options, "threads", 0) or 0,
                                      progress=bar)
        result["run"] = {"copies": copies, "timing": timing}
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    report.finish_result(result, t0)
    return write_result(out, "duplicates", result, markdown(result))
