"""Moving a store between faiss and Milvus: ids kept, same results, resumable, and through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from img_agent.config import Settings
from img_agent.errors import InvalidInputError
from img_agent.index import migrate as migrate_module
from img_agent.index.engine import Engine
from img_agent.results import SearchFilter
from img_agent.testing import StubEncoder, clip_like_vectors

DIM = 32


def results(eng: Engine, q: np.ndarray, flt: SearchFilter | None = None) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.score, 5)) for h in hits] for hits in eng.search_vectors(q, 15, flt)]


def same(a: list[list[tuple[int, float]]], b: list[list[tuple[int, float]]]) -> bool:
    """The same ids in the same order, with the same cosine scores (to float32 rounding)."""
    return all([i for i, _ in x] == [i for i, _ in y] and np.allclose([s for _, s in x], [s for _, s in y], atol=1e-4)
               for x, y in zip(a, b, strict=True))


def test_round_trip_keeps_ids_and_results(tmp_path, monkeypatch):
    x = clip_like_vectors(1500, DIM, seed=1)
    q = clip_like_vectors(4, DIM, seed=2)
    meta = [{"format": "PNG" if i % 2 else "JPEG", "tags": ["Sea"] if i % 7 == 0 else []} for i in range(1500)]
    uri = str(tmp_path / "milvus.db")
    monkeypatch.setattr(migrate_module, "BATCH", 400)
    settings = Settings(data_dir=tmp_path / "data", model="stub", index_string="Flat")
    with Engine.open(settings, encoder=StubEncoder(DIM)) as eng:
        eng.add_vectors(x, [f"/p/{i}.jpg" for i in range(1500)], metadata=meta)
        eng.merge()
        eng.remove(ids=list(range(0, 1500, 10)))
        sea = SearchFilter(tags_any=["sea"], formats=["png"])
        before_sea = results(eng, q, sea)
        stop = threading.Event()

        def cancel_after_two(done: int, total: int | None, message: str) -> None:
            if done >= 800:
                stop.set()

        first = eng.migrate(uri, progress=cancel_after_two, cancel=stop)  # interrupted: still faiss
        assert first.cancelled and first.copied == 800 and eng.vector_store == "faiss"
        eng.remove(ids=[1, 3])  # changes while half copied reach Milvus too
        eng.add_vectors(clip_like_vectors(1, DIM, seed=3), ["/p/new.jpg"])
        on_faiss = results(eng, q)
        done = eng.migrate(uri)
        live_now = sorted(set(range(1501)) - set(range(0, 1500, 10)) - {1, 3})
        assert done.resumed_from > 0 and not done.cancelled and done.images == len(live_now) == 1349
        assert done.copied == sum(i >= done.resumed_from for i in live_now)  # only the rest was copied again
        assert eng.vector_store == uri and done.index == "milvus FLAT"
        with pytest.raises(InvalidInputError, match="already keeps its vectors"):
            eng.migrate(uri)
    assert not list((tmp_path / "data" / "index").glob("gen-*"))  # the faiss files went with the switch
    with Engine.open(Settings(data_dir=tmp_path / "data", model="stub"), encoder=StubEncoder(DIM)) as eng:
        assert eng.vector_store == uri
        got = results(eng, q)
        assert same(got, on_faiss)
        live = np.ones(1501, bool)
        live[::10] = False
        live[[1, 3]] = False
        xs = np.concatenate([x, clip_like_vectors(1, DIM, seed=3)])
        for qi, hits in zip(q, got, strict=True):
            ids = np.flatnonzero(live)
            scores = xs[ids] @ qi
            assert [h for h, _ in hits] == ids[np.lexsort((ids, -scores))][:15].tolist()
        assert same(results(eng, q, sea), [[h for h in hits if h[0] not in (1, 3)] for hits in before_sea])
        back = eng.migrate("faiss")
        assert back.target == "faiss" and eng.vector_store == "faiss" and back.images == 1349
        assert same(results(eng, q), got)
    with Engine.open(Settings(data_dir=tmp_path / "data", model="stub"), encoder=StubEncoder(DIM)) as eng:
        assert eng.vector_store == "faiss" and same(results(eng, q), got) and eng.status().main == 1349


def test_cli_migrate_moves_the_store(tmp_path):
    data = tmp_path / "data"
    with Engine.open(Settings(data_dir=data, model="stub"), encoder=StubEncoder(DIM)) as eng:
        eng.add_vectors(clip_like_vectors(50, DIM, seed=4), [f"/p/{i}.jpg" for i in range(50)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMG_AGENT_", "LLM_"))}
    uri = str(tmp_path / "m.db")
    env.update({"IMG_AGENT_DATA_DIR": str(data), "IMG_AGENT_VECTOR_STORE": uri})  # as a user about to switch has it
    run = subprocess.run([sys.executable, "-m", "img_agent", "--json", "migrate", "--to", uri], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["source"], report["target"], report["images"]) == ("faiss", uri, 50)
    bad = subprocess.run([sys.executable, "-m", "img_agent", "migrate", "--to", "mysql://x"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "neither 'faiss' nor a Milvus URI" in bad.stderr


def test_backup_of_a_milvus_store_is_a_faiss_store_of_its_own(tmp_path):
    x = clip_like_vectors(60, DIM, seed=5)
    uri = str(tmp_path / "milvus.db")
    settings = Settings(data_dir=tmp_path / "data", model="stub", vector_store=uri)
    with Engine.open(settings, encoder=StubEncoder(DIM)) as eng:
        eng.add_vectors(x, [f"/p/{i}.jpg" for i in range(60)])
        eng.remove(ids=[7])
        expected = results(eng, x[:3])
        eng.backup(tmp_path / "copy")
    with Engine.open(Settings(data_dir=tmp_path / "copy", model="stub"), encoder=StubEncoder(DIM)) as copy:
        assert copy.vector_store == "faiss" and copy.status().live == 59
        assert same(results(copy, x[:3]), expected)
        copy.add_vectors(clip_like_vectors(1, DIM, seed=6), ["/p/new.jpg"])  # never reaches the original's collection
    with Engine.open(settings, encoder=StubEncoder(DIM)) as eng:
        assert eng.status().live == 59 and "/p/new.jpg" not in {h.path for h in eng.search_vectors(x[:1], 60)[0]}
