"""Near-duplicate groups and collapsed searches, checked against all-pairs numpy oracles."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import AccessDeniedError, InvalidInputError
from img_agent.index.duplicates import DEFAULT_DUPLICATE_THRESHOLD, QUERY_CHUNK
from img_agent.index.engine import Engine
from img_agent.testing import StubEncoder, make_images
from img_agent.tools.image_tools import ImageTools, get_spec
from img_agent.tools.sandbox import Sandbox
from img_agent.tools.shapes import ToolHit

DIM = 32


def open_engine(tmp_path: Path) -> Engine:
    return Engine.open(Settings(data_dir=tmp_path / "data", model="stub"), encoder=StubEncoder(DIM))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def crafted(rng: np.random.Generator, clusters: list[int], singles: int, noise: float = 0.03) -> np.ndarray:
    """Clusters of near-identical unit vectors (cosine > 0.99 within), then random ones, shuffled."""
    rows = []
    for size in clusters:
        centre = rng.standard_normal(DIM)
        centre /= np.linalg.norm(centre)
        rows += [centre + noise * rng.standard_normal(DIM) / np.sqrt(DIM) for _ in range(size)]
    rows += list(rng.standard_normal((singles, DIM)))
    out = unit(np.array(rows))
    return out[rng.permutation(len(out))]


def components(vectors: np.ndarray, ids: np.ndarray, threshold: float) -> set[frozenset[int]]:
    """Oracle: connected components (two or more images) of all pairs with cosine >= threshold."""
    sims = vectors[ids] @ vectors[ids].T
    adjacent = sims >= threshold
    seen: set[int] = set()
    groups = set()
    for start in range(len(ids)):
        if start in seen:
            continue
        stack, members = [start], set()
        while stack:
            node = stack.pop()
            if node in members:
                continue
            members.add(node)
            stack += [int(j) for j in np.flatnonzero(adjacent[node]) if j not in members]
        seen |= members
        if len(members) > 1:
            groups.add(frozenset(int(ids[m]) for m in members))
    return groups


def found(report) -> set[frozenset[int]]:
    return {frozenset(image.id for image in group.images) for group in report.groups}


def paths(n: int, folder: str = "/p") -> list[str]:
    return [f"{folder}/img_{i:05d}.jpg" for i in range(n)]


# -- groups ------------------------------------------------------------------------------------


def test_groups_equal_all_pairs_components_in_buffer_main_and_after_removals(tmp_path: Path, rng) -> None:
    vectors = crafted(rng, [2, 3, 5, 2], 60)
    # a chain: a~b and b~c above the threshold, a~c below it; one group all the same
    a = unit(rng.standard_normal(DIM))
    r = rng.standard_normal(DIM)
    side = unit(r - (r @ a) * a)
    chain = unit(np.array([a, a * np.cos(0.28) + side * np.sin(0.28), a * np.cos(0.56) + side * np.sin(0.56)]))
    vectors = np.concatenate([vectors, chain])
    t = 0.95
    assert chain[0] @ chain[1] > t and chain[1] @ chain[2] > t and chain[0] @ chain[2] < t
    with open_engine(tmp_path) as engine:
        ids = np.array(engine.add_vectors(vectors, paths(len(vectors))))
        report = engine.find_duplicates(t)
        assert report.method == "exact flat" and report.compared == len(vectors)
        expected = components(vectors, ids, t)
        assert found(report) == expected and frozenset(ids[-3:].tolist()) in expected
        engine.merge()  # a Flat main index: its own range search is used
        report = engine.find_duplicates(t)
        assert report.method == "main index" and found(report) == expected
        # tombstones in the main index, and new vectors in the buffer
        removed = [int(next(iter(g))) for g in list(expected)[:2]]
        engine.remove(ids=removed)
        extra = unit(vectors[ids[-1]] + 0.01 * rng.standard_normal(DIM))[None, :]
        new_id = engine.add_vectors(extra, ["/p/new.jpg"])[0]
        all_vectors = np.concatenate([vectors, extra])
        live = np.array([i for i in range(len(all_vectors)) if i not in removed])
        report = engine.find_duplicates(t)
        assert report.method == "main index" and report.compared == len(live)
        expected = components(all_vectors, live, t)
        assert found(report) == expected and any(new_id in g for g in expected)
        assert report.total_groups == len(expected) and report.total_extras == sum(len(g) - 1 for g in expected)
        sizes = [len(g.images) for g in report.groups]
        assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("index_string, kind", [("IVF8,Flat", "IVF"), ("IVF4,PQ8x4", "PQ"), ("HNSW16", "HNSW")])
def test_approximate_or_compressed_main_index_falls_back_to_exact(tmp_path: Path, rng, index_string: str,
                                                                   kind: str) -> None:
    vectors = crafted(rng, [2, 2, 3, 4, 6, 2, 2], 680)  # 701 vectors: enough to train 4-bit PQ codebooks
    with open_engine(tmp_path) as engine:
        ids = np.array(engine.add_vectors(vectors, paths(len(vectors))))
        engine.rebuild(index_string=index_string)
        assert kind in engine.status().index
        for t in (0.9, 0.99):
            report = engine.find_duplicates(t)
            assert report.method == "exact flat"
            assert found(report) == components(vectors, ids, t)


def test_chunks_report_progress_and_cancel_stops(tmp_path: Path, rng) -> None:
    n = QUERY_CHUNK * 2 + 10
    vectors = crafted(rng, [3, 3], n - 6)
    calls: list[tuple[int, int | None]] = []
    with open_engine(tmp_path) as engine:
        ids = np.array(engine.add_vectors(vectors, paths(n)))
        report = engine.find_duplicates(0.95, progress=lambda done, total, _msg: calls.append((done, total)))
        assert found(report) == components(vectors, ids, 0.95) and not report.cancelled
        assert calls == [(QUERY_CHUNK, n), (2 * QUERY_CHUNK, n), (n, n)]
        stop = threading.Event()
        stop.set()
        assert engine.find_duplicates(0.95, cancel=stop).cancelled


def test_folder_restricts_what_is_compared(tmp_path: Path, rng) -> None:
    vectors = crafted(rng, [4, 4, 3], 30)
    folders = ["/p/a" if i % 2 else ("/p/ab" if i % 3 else "/p/b") for i in range(len(vectors))]
    names = [f"{folder}/img_{i}.jpg" for i, folder in enumerate(folders)]
    with open_engine(tmp_path) as engine:
        ids = np.array(engine.add_vectors(vectors, names))
        under_a = ids[[f == "/p/a" for f in folders]]
        report = engine.find_duplicates(0.95, folder="/p/a/")
        assert report.folder == "/p/a" and report.compared == len(under_a)
        assert found(report) == components(vectors, under_a, 0.95)  # '/p/ab' is not under '/p/a'
        assert all(image.path.startswith("/p/a/") for g in report.groups for image in g.images)
        assert found(engine.find_duplicates(0.95, folder="/p")) == components(vectors, ids, 0.95)
        assert engine.find_duplicates(0.95, folder="/elsewhere").compared == 0


def test_keeper_is_largest_then_heaviest_then_oldest_then_smallest_id(tmp_path: Path, rng) -> None:
    # (width, height, size, mtime) per group member; the expected keeper's position
    cases = [
        ([(100, 100, 10, 5.0), (200, 100, 1, 9.0), (150, 100, 99, 1.0)], 1),  # most pixels
        ([(100, 100, 10, 5.0), (50, 200, 30, 9.0), (200, 50, 20, 1.0)], 1),  # equal pixels: most bytes
        ([(10, 10, 7, 5.0), (10, 10, 7, 3.0), (10, 10, 7, 4.0)], 1),  # then the oldest file
        ([(10, 10, 7, 3.0), (10, 10, 7, 3.0)], 0),  # then the smallest id
    ]
    vectors = unit(np.concatenate([np.repeat(rng.standard_normal((1, DIM)), len(m), axis=0)
                                   + 0.001 * rng.standard_normal((len(m), DIM)) for m, _ in cases]))
    metadata = [{"width": w, "height": h, "size": s, "mtime": m} for members, _ in cases for w, h, s, m in members]
    with open_engine(tmp_path) as engine:
        ids = engine.add_vectors(vectors, paths(len(vectors)), metadata=metadata)
        report = engine.find_duplicates(0.99)
        assert len(report.groups) == len(cases)
        start = 0
        by_keeper = {g.keeper: g for g in report.groups}
        for members, keeper_at in cases:
            keeper = ids[start + keeper_at]
            group = by_keeper[keeper]
            assert {im.id for im in group.images} == set(ids[start : start + len(members)])
            assert group.images[0].id == keeper and group.images[0].keeper and group.images[0].similarity == 1.0
            assert sorted(group.extras) == sorted(set(ids[start : start + len(members)]) - {keeper})
            w, h, s, m = members[keeper_at]
            assert (group.images[0].width, group.images[0].height, group.images[0].size, group.images[0].mtime) == (w, h, s, m)
            start += len(members)
        assert [len(g.images) for g in report.groups] == [3, 3, 3, 2]


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.0001, 2, float("nan"), float("inf"), True])
def test_threshold_outside_zero_one_is_refused(tmp_path: Path, bad: float) -> None:
    with open_engine(tmp_path) as engine:
        engine.add_vectors(unit(np.eye(DIM)[:2]), paths(2))
        with pytest.raises(InvalidInputError, match="above 0 and at most 1"):
            engine.find_duplicates(bad)
        if bad is not True:  # collapse=True means the default threshold
            with pytest.raises(InvalidInputError):
                engine.search_similar(0, k=1, collapse=bad)


def test_threshold_one_finds_identical_vectors_only_and_none_is_the_default(tmp_path: Path, rng) -> None:
    v = unit(rng.standard_normal(DIM))
    close = unit(v + 0.05 * rng.standard_normal(DIM))
    vectors = np.stack([v, v, close, unit(rng.standard_normal(DIM))])
    with open_engine(tmp_path) as engine:
        ids = engine.add_vectors(vectors, paths(4))
        assert found(engine.find_duplicates(1.0)) == {frozenset(ids[:2])}
        default = engine.find_duplicates(None)
        assert default.threshold == DEFAULT_DUPLICATE_THRESHOLD
        assert found(default) == components(vectors, np.array(ids), DEFAULT_DUPLICATE_THRESHOLD)


# -- collapsed searches ------------------------------------------------------------------------


def collapse_oracle(vectors: np.ndarray, live: np.ndarray, q: np.ndarray, k: int, t: float, exclude: int):
    """Exact ranking, then greedy folding into the best-ranked kept hit, up to the (k+1)-th picture."""
    ids = np.array([i for i in np.flatnonzero(live) if i != exclude])
    scores = vectors[ids] @ q
    order = ids[np.lexsort((ids, -scores))]
    kept: list[int] = []
    folded: dict[int, list[int]] = {}
    for i in order:
        match = [j for j in kept if vectors[j] @ vectors[i] >= t]
        if match:
            folded[match[0]].append(int(i))
        elif len(kept) == k:
            break
        else:
            kept.append(int(i))
            folded[int(i)] = []
    return [(i, folded[i]) for i in kept]


@pytest.mark.parametrize("merge", [False, True])
def test_collapse_returns_k_different_pictures_with_their_folded_duplicates(tmp_path: Path, rng, merge: bool) -> None:
    vectors = crafted(rng, [25, 25, 12, 3, 2], 15, noise=0.02)
    t = 0.95
    with open_engine(tmp_path) as engine:
        engine.add_vectors(vectors, paths(len(vectors)))
        if merge:
            engine.merge()
        live = np.ones(len(vectors), dtype=bool)
        for query_id in (0, 7, 33, 80):
            pictures = len(collapse_oracle(vectors, live, vectors[query_id], len(vectors), t, query_id))
            assert pictures >= 15
            for k in (1, 4, 10, 40):
                got = engine.search_similar(query_id, k=k, collapse=t)
                want = collapse_oracle(vectors, live, vectors[query_id], k, t, query_id)
                assert [(h.id, h.duplicates) for h in got] == want
                assert len(got) == min(k, pictures)  # k different pictures whenever k exist
                assert [h.rank for h in got] == list(range(1, len(got) + 1))
                scores = [h.score for h in got]
                assert scores == sorted(scores, reverse=True)
                kept = [h.id for h in got]
                assert all(vectors[a] @ vectors[b] < t for i, a in enumerate(kept) for b in kept[i + 1 :])
        plain = engine.search_similar(0, k=5)
        assert all(ToolHit.model_validate(h.model_dump()).duplicates is None for h in plain)
        collapsed = engine.search_similar(0, k=5, collapse=True)
        assert [ToolHit.model_validate(h.model_dump()).duplicates for h in collapsed] == [h.duplicates for h in collapsed]


def test_collapse_hits_folds_within_a_given_list(tmp_path: Path, rng) -> None:
    vectors = crafted(rng, [6, 4], 20, noise=0.02)
    with open_engine(tmp_path) as engine:
        ids = engine.add_vectors(vectors, paths(len(vectors)))
        hits = engine.search_vectors(vectors[ids[0]], k=len(ids))[0]
        got = engine.collapse_hits(hits, k=5, threshold=0.95)
        live = np.ones(len(vectors), dtype=bool)
        want = collapse_oracle(vectors, live, vectors[ids[0]], 5, 0.95, exclude=-1)
        assert [(h.id, h.duplicates) for h in got] == want and [h.rank for h in got] == list(range(1, 6))
        tool_hits = [ToolHit.model_validate({**h.model_dump(), "matched_queries": [f"q{h.id}"]}) for h in hits]
        folded = [ToolHit.model_validate(h.model_dump()) for h in engine.collapse_hits(tool_hits, 5, 0.95)]
        assert [(h.id, h.duplicates, h.matched_queries) for h in folded] == [(i, d, [f"q{i}"]) for i, d in want]


# -- real images -------------------------------------------------------------------------------


def test_resized_copies_of_real_images_group_with_their_original(tmp_path: Path, settings: Settings) -> None:
    from PIL import Image

    originals = make_images(tmp_path / "photos", 6, size=(160, 120))
    copies = []
    for path in originals[:3]:
        copy = tmp_path / "photos" / "copies" / (path.stem + "_small.jpg")
        copy.parent.mkdir(exist_ok=True)
        Image.open(path).convert("RGB").resize((80, 60), Image.LANCZOS).save(copy, quality=80)
        copies.append(copy)
    with Engine.open(settings) as engine:
        report_add = engine.add_paths([tmp_path / "photos"])
        assert len(report_add.added) == 9
        by_path = {r.path: r.id for r in engine.get(report_add.added)}
        t = 0.999  # tiny-test (random weights): resized copies score >= 0.9999 to their original
        report = engine.find_duplicates(t)
        ids = np.array(sorted(by_path.values()))
        vectors = np.zeros((ids.max() + 1, engine.dim), np.float32)
        vectors[ids] = engine.store.get(ids)
        assert found(report) == components(vectors, ids, t)
        for original, copy in zip(originals, copies):
            a, b = by_path[str(original.resolve())], by_path[str(copy.resolve())]
            group = next(g for g in report.groups if any(im.id == a for im in g.images))
            assert b in group.extras  # the 160x120 original outranks its 80x60 copy as keeper
            assert next(im for im in group.images if im.id == group.keeper).width == 160
        tools = ImageTools(engine, Sandbox([tmp_path / "photos"], max_file_bytes=settings.max_file_bytes))
        spec = get_spec("find_duplicates")
        under = spec.call(tools, spec.parse({"threshold": t, "folder": "copies"}))
        assert under.folder == str((tmp_path / "photos" / "copies").resolve()) and under.compared == 3
        limited = spec.call(tools, spec.parse({"threshold": t, "max_groups": 1}))
        assert len(limited.groups) == 1 and limited.total_groups == report.total_groups
        assert limited.truncated == (report.total_groups > 1)
        with pytest.raises(AccessDeniedError):
            spec.call(tools, spec.parse({"folder": str(tmp_path)}))
        with pytest.raises(InvalidInputError):
            spec.parse({"threshold": 0})
