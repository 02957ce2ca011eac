"""Every search filter condition, checked against an exact brute-force oracle.

The store holds a few thousand vectors with varied metadata: most in an IVF main index (searched with
a faiss selector bitmap), the rest in the exact buffer. Each filter's allowed rows are computed here
in plain Python from the generated metadata, and the engine's top-k must equal the exact top-k over
them, with k results whenever k match, both through the exact-subset path and the faiss path.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import AccessDeniedError, InvalidInputError
from img_agent.index import filters, milvus_filter
from img_agent.index import search as search_module
from img_agent.index.engine import Engine
from img_agent.results import SearchFilter
from img_agent.testing import StubEncoder, clip_like_vectors
from img_agent.tools.image_tools import ImageTools
from img_agent.tools.openai_tools import dispatch
from img_agent.tools.sandbox import Sandbox

DIM = 32
N_MAIN, N_BUFFER = 2600, 400
K = 20
FOLDERS = ["/x/holiday", "/x/holiday_2", "/x/holiday/deep", "/y/Work"]
EXTS = [(".jpg", "JPEG"), (".JPG", "JPEG"), (".png", "PNG"), (".PNG", "png"), (".webp", "WEBP")]
CAMERAS = [("Canon", "Canon EOS 5D"), ("Apple", "iPhone 12"), ("NIKON CORPORATION", "NIKON D750"), (None, None)]
TAGS = ["Beach", "dog", "Sunset", "family"]
DESCRIPTIONS = ["A dog on the Beach", "sunset over water", None, "Family DINNER"]
T0 = datetime(2023, 1, 1, tzinfo=timezone.utc).timestamp()
T1 = datetime(2025, 1, 1, tzinfo=timezone.utc).timestamp()


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def taken_at(rng: np.random.Generator) -> float | None:
    """None for a fifth; a tenth on 2024-05-05, some exactly on its first and on the next day's first second."""
    r = rng.random()
    day = ts("2024-05-05")
    if r < 0.2:
        return None
    if r < 0.3:
        return day + float(rng.uniform(0, 86400))
    if r < 0.33:
        return day if r < 0.315 else day + 86400
    return float(rng.uniform(T0, T1))


def make_rows(n: int, seed: int) -> tuple[list[str], list[dict]]:
    rng = np.random.default_rng(seed)
    paths, metadata = [], []
    for i in range(n):
        ext, fmt = EXTS[rng.integers(len(EXTS))]
        paths.append(f"{FOLDERS[rng.integers(len(FOLDERS))]}/img_{seed}_{i:05d}{ext}")
        make, model = CAMERAS[rng.integers(len(CAMERAS))]
        gps = rng.random() < 0.7
        metadata.append({
            "format": fmt,
            "width": int(rng.integers(100, 4000)), "height": int(rng.integers(100, 4000)),
            "mtime": float(rng.uniform(T0, T1)),
            "taken_at": taken_at(rng),
            "camera_make": make, "camera_model": model,
            "gps_lat": float(rng.uniform(-80, 80)) if gps else None,
            "gps_lon": float(rng.uniform(-180, 180)) if gps else None,
            "tags": [t for t in TAGS if rng.random() < 0.35],
            "description": DESCRIPTIONS[rng.integers(len(DESCRIPTIONS))],
        })
    return paths, metadata


@pytest.fixture(scope="module")
def faiss_store(tmp_path_factory):
    """(engine, unit vectors, paths, metadata): the main index is IVF16,Flat probed fully, plus a buffer."""
    x = clip_like_vectors(N_MAIN + N_BUFFER, DIM, seed=5)
    p1, m1 = make_rows(N_MAIN, 1)
    p2, m2 = make_rows(N_BUFFER, 2)
    settings = Settings(data_dir=tmp_path_factory.mktemp("filters") / "data", model="stub",
                        merge_threshold=10**6, nprobe=16)
    engine = Engine.open(settings, encoder=StubEncoder(DIM))
    engine.add_vectors(x[:N_MAIN], p1, metadata=m1)
    engine.rebuild(index_string="IVF16,Flat")
    engine.add_vectors(x[N_MAIN:], p2, metadata=m2)
    status = engine.status()
    assert (status.main, status.buffer, status.nlist) == (N_MAIN, N_BUFFER, 16)
    yield engine, x, p1 + p2, m1 + m2
    engine.close()


@pytest.fixture(scope="module")
def milvus_store(tmp_path_factory):
    """The same images in a Milvus Lite collection (exact FLAT index at this size)."""
    x = clip_like_vectors(N_MAIN + N_BUFFER, DIM, seed=5)
    p1, m1 = make_rows(N_MAIN, 1)
    p2, m2 = make_rows(N_BUFFER, 2)
    folder = tmp_path_factory.mktemp("filters-milvus")
    settings = Settings(data_dir=folder / "data", model="stub", vector_store=str(folder / "milvus.db"))
    engine = Engine.open(settings, encoder=StubEncoder(DIM))
    engine.add_vectors(x[:N_MAIN], p1, metadata=m1)
    engine.merge()
    engine.add_vectors(x[N_MAIN:], p2, metadata=m2)
    assert engine.status().vector_store == str(folder / "milvus.db")
    yield engine, x, p1 + p2, m1 + m2
    engine.close()


@pytest.fixture
def store(request):
    """The faiss store, or the Milvus one when the test runs on the ``milvus`` search path."""
    on_milvus = "path" in request.fixturenames and request.getfixturevalue("path") == "milvus"
    return request.getfixturevalue("milvus_store" if on_milvus else "faiss_store")


def refuse(*args, **kwargs):
    raise AssertionError("the exact fallback ran; the index (faiss selector or Milvus expression) should have answered")


@pytest.fixture(params=["exact-subset", "faiss-selector", "milvus"])
def path(request, monkeypatch):
    """Which search path answers: the exact search over the allowed ids, faiss with the selector bitmap (the
    exact fallback is then refused, so the faiss answer itself is checked), or Milvus with the filter as a
    boolean expression (refused likewise wherever Milvus can express the filter)."""
    if request.param == "faiss-selector":
        monkeypatch.setattr(search_module, "EXACT_SUBSET_MAX", 0)
        monkeypatch.setattr(search_module.Searcher, "exact", refuse)
    return request.param


def milvus_answers(path: str, conditions: dict, monkeypatch) -> bool:
    """On the Milvus path, refuse the exact fallback when Milvus can express ``conditions``; whether it can."""
    if path != "milvus":
        return False
    expressible = milvus_filter.expression(filters.check(SearchFilter(**conditions))) is not None
    if expressible:
        monkeypatch.setattr(search_module.Searcher, "exact", refuse)
    return expressible


def queries(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(9)
    extra = rng.normal(size=(1, DIM)).astype(np.float32)
    q = np.concatenate([x[[5, 2777]], extra])
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def oracle(x: np.ndarray, allowed: list[bool], q: np.ndarray, k: int, min_score: float | None = None) -> list[int]:
    ids = np.flatnonzero(np.array(allowed))
    scores = x[ids] @ q
    if min_score is not None:
        keep = scores >= min_score
        ids, scores = ids[keep], scores[keep]
    return ids[np.lexsort((ids, -scores))][:k].tolist()


def camera(m: dict) -> str:
    return f"{m['camera_make'] or ''} {m['camera_model'] or ''}".lower()


def has_gps(m: dict) -> bool:
    return m["gps_lat"] is not None


def tags(m: dict) -> set[str]:
    return {t.lower() for t in m["tags"]}


# (filter, predicate over (path, metadata)) for every condition
CASES = {
    "folder": ({"folder": "/x/holiday"}, lambda p, m: p.startswith("/x/holiday/")),
    "folder-trailing-slash": ({"folder": "/x/holiday/deep/"}, lambda p, m: p.startswith("/x/holiday/deep/")),
    "glob-any-case": ({"glob": "*.png"}, lambda p, m: p.lower().endswith(".png")),
    "glob-spans-slash": ({"glob": "/X/*/IMG_1_0*"}, lambda p, m: fnmatch.fnmatchcase(p.lower(), "/x/*/img_1_0*")),
    "glob-class": ({"glob": "*/img_?_0[0-1][!0-4]*"},
                   lambda p, m: fnmatch.fnmatchcase(p.lower(), "*/img_?_0[0-1][!0-4]*")),
    "glob-case-sensitive": ({"glob": "*.PNG", "glob_case_sensitive": True}, lambda p, m: p.endswith(".PNG")),
    "formats-jpg": ({"formats": ["jpg"]}, lambda p, m: m["format"] == "JPEG"),
    "formats-any-case": ({"formats": ["PNG", "webp"]}, lambda p, m: m["format"].upper() in {"PNG", "WEBP"}),
    "taken-after-date": ({"taken_after": "2024-03-01"},
                         lambda p, m: m["taken_at"] is not None and m["taken_at"] >= ts("2024-03-01")),
    "taken-before-date-whole-day": ({"taken_before": "2023-06-30"},
                                    lambda p, m: m["taken_at"] is not None and m["taken_at"] < ts("2023-07-01")),
    "taken-one-day": ({"taken_after": "2024-05-05", "taken_before": "2024-05-05"},
                      lambda p, m: m["taken_at"] is not None and ts("2024-05-05") <= m["taken_at"] < ts("2024-05-06")),
    "taken-unix-and-offset": ({"taken_after": ts("2023-02-01"), "taken_before": "2023-09-01T12:00:00+02:00"},
                              lambda p, m: m["taken_at"] is not None
                              and ts("2023-02-01") <= m["taken_at"] <= ts("2023-09-01T10:00:00")),
    "modified": ({"modified_after": "2024-01-01T00:00:00Z", "modified_before": "2024-06-30"},
                 lambda p, m: ts("2024-01-01") <= m["mtime"] < ts("2024-07-01")),
    "camera": ({"camera": "CANON"}, lambda p, m: "canon" in camera(m)),
    "camera-make-and-model": ({"camera": "apple iphone"}, lambda p, m: "apple iphone" in camera(m)),
    "has-gps": ({"has_gps": True}, lambda p, m: has_gps(m)),
    "no-gps": ({"has_gps": False}, lambda p, m: not has_gps(m)),
    "bbox": ({"bbox": {"min_lat": -20, "min_lon": -60, "max_lat": 45, "max_lon": 30}},
             lambda p, m: has_gps(m) and -20 <= m["gps_lat"] <= 45 and -60 <= m["gps_lon"] <= 30),
    "bbox-antimeridian": ({"bbox": [-80, 150, 80, -150]},
                          lambda p, m: has_gps(m) and (m["gps_lon"] >= 150 or m["gps_lon"] <= -150)),
    "min-width": ({"min_width": 3000}, lambda p, m: m["width"] >= 3000),
    "min-height": ({"min_height": 3500}, lambda p, m: m["height"] >= 3500),
    "tags-any": ({"tags_any": ["beach", "SUNSET"]}, lambda p, m: bool(tags(m) & {"beach", "sunset"})),
    "tags-all": ({"tags_all": ["Dog", "family"]}, lambda p, m: {"dog", "family"} <= tags(m)),
    "tags-none": ({"tags_none": ["dog", "nosuchtag"]}, lambda p, m: "dog" not in tags(m)),
    "tags-all-unknown": ({"tags_all": ["dog", "nosuchtag"]}, lambda p, m: False),
    "description": ({"description": "dog on the beach"},
                    lambda p, m: "dog on the beach" in (m["description"] or "").lower()),
    "combined": ({"folder": "/x", "formats": ["JPEG", "png"], "has_gps": True, "tags_none": ["beach"],
                      "taken_after": "2023-04-01", "camera": "n"},
                 lambda p, m: p.startswith("/x/") and m["format"].upper() in {"JPEG", "PNG"} and has_gps(m)
                 and "beach" not in tags(m) and m["taken_at"] is not None and m["taken_at"] >= ts("2023-04-01")
                 and "n" in camera(m)),
    "fewer-than-k-match": ({"tags_all": ["dog", "beach", "sunset", "family"], "min_width": 2500, "has_gps": True},
                           lambda p, m: {"dog", "beach", "sunset", "family"} <= tags(m) and m["width"] >= 2500
                           and has_gps(m)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_filter_matches_the_exact_oracle(store, path, case, monkeypatch):
    engine, x, paths, metadata = store
    conditions, allows = CASES[case]
    assert milvus_answers(path, conditions, monkeypatch) == (path == "milvus" and case != "glob-class")
    allowed = [allows(p, m) for p, m in zip(paths, metadata, strict=True)]
    n_allowed = sum(allowed)
    if case == "tags-all-unknown":
        assert n_allowed == 0
    elif case == "fewer-than-k-match":
        assert 0 < n_allowed < K
    else:
        assert K < n_allowed < len(paths)  # a real restriction, with more than k matches
    q = queries(x)
    found = engine.search_vectors(q, K, SearchFilter(**conditions))
    for i, hits in enumerate(found):
        assert len(hits) == min(K, n_allowed)
        assert [h.id for h in hits] == oracle(x, allowed, q[i], K)
        assert all(allowed[h.id] for h in hits)


def test_min_score_drops_weaker_results(store, path, monkeypatch):
    engine, x, paths, _ = store
    milvus_answers(path, {"glob": "*.png"}, monkeypatch)
    q = queries(x)[:1]
    scores = np.sort(x @ q[0])[::-1]
    floor = float(scores[7])  # 8 of the best pass: fewer than k
    hits = engine.search_vectors(q, K, SearchFilter(min_score=floor))[0]
    assert [h.id for h in hits] == oracle(x, [True] * len(paths), q[0], K, min_score=floor)
    assert len(hits) == 8 and all(h.score >= floor - 1e-6 for h in hits)
    allowed = [p.lower().endswith(".png") for p in paths]
    hits = engine.search_vectors(q, K, SearchFilter(glob="*.png", min_score=0.0))[0]
    assert [h.id for h in hits] == oracle(x, allowed, q[0], K, min_score=0.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_milvus_expression_selects_exactly_the_allowed_images(milvus_store, case):
    engine, _, paths, metadata = milvus_store
    conditions, allows = CASES[case]
    expr = milvus_filter.expression(filters.check(SearchFilter(**conditions)))
    if case == "glob-class":
        assert expr is None  # a character class has no exact Milvus form: answered from the catalog
        return
    index = engine._state.external.index
    allowed = [i for i, (p, m) in enumerate(zip(paths, metadata, strict=True)) if allows(p, m)]
    assert index.query_ids(len(paths), expr).tolist() == allowed


def test_folder_is_component_wise(store):
    engine, x, paths, _ = store
    hits = engine.search_vectors(x[:1], 1000, SearchFilter(folder="/x/holiday"))[0]
    assert {h.path.rsplit("/", 1)[0] for h in hits} == {"/x/holiday", "/x/holiday/deep"}
    assert len(hits) == min(1000, sum(p.startswith("/x/holiday/") for p in paths))
    hits = engine.search_vectors(x[:1], 1000, SearchFilter(folder="/x/holiday_2"))[0]
    assert {h.path.rsplit("/", 1)[0] for h in hits} == {"/x/holiday_2"}
    assert len(hits) == sum(p.startswith("/x/holiday_2/") for p in paths) < 1000
    assert engine.search_vectors(x[:1], 10, SearchFilter(folder="/x/holi"))[0] == []


def test_glob_ignores_case_unless_asked(store):
    engine, x, paths, _ = store
    upper = sum(p.endswith(".PNG") for p in paths)
    any_case = engine.search_vectors(x[:1], 1000, SearchFilter(glob="/y/*.png"))[0]
    assert len(any_case) == sum(p.startswith("/y/") and p.lower().endswith(".png") for p in paths) < 1000
    assert {h.path[-4:] for h in any_case} == {".png", ".PNG"} and upper > 0
    exact = engine.search_vectors(x[:1], 1000, SearchFilter(glob="*.png", glob_case_sensitive=True))[0]
    assert all(h.path.endswith(".png") for h in exact) and len(exact) == sum(p.endswith(".png") for p in paths)


def test_removed_images_are_never_returned(tmp_path):
    x = clip_like_vectors(50, DIM, seed=3)
    with Engine.open(Settings(data_dir=tmp_path / "d", model="stub"), encoder=StubEncoder(DIM)) as engine:
        engine.add_vectors(x, [f"/p/{i}.jpg" for i in range(50)], metadata=[{"tags": ["Keep"]}] * 50)
        engine.remove(ids=list(range(0, 50, 2)))
        hits = engine.search_vectors(x[:1], 50, SearchFilter(tags_any=["keep"]))[0]
        assert sorted(h.id for h in hits) == list(range(1, 50, 2))


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ({"taken_after": "yesterday"}, "taken_after must be an ISO 8601 date"),
        ({"modified_before": "2024-13-01"}, "modified_before must be an ISO 8601 date"),
        ({"taken_after": "2024-06-02", "taken_before": "2024-06-01"}, "swap them or widen the range"),
        ({"bbox": [91, 0, 95, 10]}, "latitudes from -90 to 90"),
        ({"bbox": [10, 0, 5, 10]}, "min_lat <= max_lat"),
        ({"bbox": [0, -181, 5, 10]}, "longitudes from -180 to 180"),
        ({"min_score": 1.5}, "min_score is a cosine similarity from -1 to 1"),
        ({"min_width": -1}, "min_width must be 0 or more"),
        ({"formats": ["j p g"]}, "no image format name"),
        ({"folder": "relative/dir"}, "folder must be an absolute path"),
        ({"tags_any": ["  "]}, "empty tag"),
    ],
)
def test_bad_filters_say_what_to_do(store, conditions, message):
    engine, x, _, _ = store
    with pytest.raises(InvalidInputError, match=message):
        engine.search_vectors(x[:1], 5, SearchFilter(**conditions))


def test_tool_where_through_the_dispatcher(tmp_path):
    root = (tmp_path / "photos").resolve()
    names = ["holiday/a.jpg", "holiday/b.PNG", "holiday_2/c.png", "holiday/sub/d.png", "other/e.png"]
    x = clip_like_vectors(len(names), DIM, seed=4)
    meta = [{"format": "PNG" if n.lower().endswith(".png") else "JPEG", "tags": ["Sea"] if i % 2 else []}
            for i, n in enumerate(names)]
    with Engine.open(Settings(data_dir=tmp_path / "d", model="stub"), encoder=StubEncoder(DIM)) as engine:
        engine.add_vectors(x, [str(root / n) for n in names], metadata=meta)
        tools = ImageTools(engine, Sandbox([root], max_file_bytes=10**6))
        where = {"folder": "holiday", "formats": ["png"], "glob": None, "taken_after": None, "bbox": None}
        result = json.loads(dispatch(tools, "search_by_image", json.dumps({"image_id": 0, "k": 10, "where": where})))
        assert sorted(h["path"] for h in result["hits"]) == [str(root / "holiday/b.PNG"), str(root / "holiday/sub/d.png")]
        result = json.loads(dispatch(tools, "search_by_image", {"image_id": 0, "where": {"tags_any": ["SEA"]}}))
        assert sorted(h["id"] for h in result["hits"]) == [1, 3]
        outside = json.loads(dispatch(tools, "search_by_image", {"image_id": 0, "where": {"folder": "/etc"}}))
        assert "outside the allowed folders" in outside["error"] and str(root) in outside["error"]
        bad = json.loads(dispatch(tools, "search_by_image", {"image_id": 0, "where": {"taken_before": "soon"}}))
        assert "taken_before must be an ISO 8601 date" in bad["error"]
        with pytest.raises(AccessDeniedError):
            tools.search_by_image(image_id=0, where=SearchFilter(folder="../.."))


def test_cli_search_with_filter_flags(tmp_path, image_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    env.update({"IMG_AGENT_DATA_DIR": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"})

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "img_agent", "--no-service", *args], capture_output=True,
                              text=True, env=env, check=False, cwd=image_dir.parent, timeout=180)

    assert cli("--model", "tiny-test", "index", str(image_dir)).returncode == 0
    sub_pngs = sorted(str(p.resolve()) for p in (image_dir / "sub").iterdir() if p.suffix.lower() == ".png")
    all_subs = [p for p in (image_dir / "sub").iterdir()]
    assert 0 < len(sub_pngs) < len(all_subs)
    out = cli("search", "a picture", "-k", "20", "--folder", f"{image_dir.name}/sub", "--format", "png", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(h["path"] for h in json.loads(out.stdout)) == sub_pngs
    bad = cli("search", "a picture", "--taken-after", "last week")
    assert bad.returncode == 1 and "taken_after must be an ISO 8601 date" in bad.stderr
    bad = cli("search", "a picture", "--bbox=1,2,3")
    assert bad.returncode == 1 and "--bbox needs four numbers" in bad.stderr


@pytest.mark.parametrize("pattern", ["*.png", "*/IMG_[a-c]*", "*[!a-z0-9/.]*", "*[]]*", "*[-x]*", "*[*]*", "*[?]",
                                     "*[", "*CAFÉ*", "*[É]*", "?[!-]*", "*[x-a]*", "*[!x-a]*"])
def test_glob_translation_matches_fnmatch(pattern):
    """The SQL GLOB made of a pattern decides like fnmatch on the lower-cased path and pattern (Unicode too)."""
    import sqlite3

    from img_agent.index.filters import FOLD_FUNCTION, _folded, fold, glob_pattern

    names = ["/a/IMG_b1.PNG", "/a/img_z.png", "/a/x]y", "/a/x-y", "/a/Café", "/a/CAFÉ.jpg", "/a/st*r", "/a/q?",
             "/a/[open", "/b/ü", "-x", "/a/-"]
    db = sqlite3.connect(":memory:")
    db.create_function(FOLD_FUNCTION, 1, fold, deterministic=True)
    sql = glob_pattern(pattern, fold_case=True)
    for name in names:
        got = False if sql is None else bool(db.execute(f"SELECT {_folded('?', pattern)} GLOB ?", (name, sql)).fetchone()[0])
        assert got == fnmatch.fnmatchcase(name.lower(), pattern.lower()), (name, sql)
