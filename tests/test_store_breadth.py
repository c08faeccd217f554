"""The index's search breadth (HNSW ef) follows the live sample count unless the configuration fixes it."""

from __future__ import annotations

import numpy as np
import pytest

import lethe.store.index as index_mod
from lethe.errors import StoreError
from lethe.store import SQLiteStore
from lethe.store.index import IndexParams, VectorIndex, expansion_for

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_breadth_is_the_base_up_to_the_base_size_then_grows_with_size():
    base, at = index_mod.EF_BASE, index_mod.EF_BASE_SIZE
    assert expansion_for(0) == expansion_for(at) == base
    sizes = [at, 2 * at, 5 * at, 10 * at, 100 * at, 1000 * at, 10**6 * at]
    efs = [expansion_for(n) for n in sizes]
    assert efs == sorted(efs)
    assert efs[1] > base and efs[3] > efs[2]  # 2x and 10x the base size search wider
    assert all(ef % index_mod.EF_STEP == 0 for ef in efs)
    assert efs[-1] == index_mod.EF_MAX
    # the power law: 10x the vectors is 10 ** EF_GROWTH the breadth (up to the rounding step)
    assert abs(expansion_for(10 * at) - base * 10 ** index_mod.EF_GROWTH) <= index_mod.EF_STEP


def test_a_configured_breadth_wins_at_any_size():
    assert expansion_for(10**9, fixed=40) == 40
    assert IndexParams().expansion_search is None
    assert IndexParams.of({"expansion_search": 300}).expansion_search == 300


@pytest.mark.parametrize("bad", [1, 0, -5, 2.5, "wide", True])
def test_a_bad_breadth_is_refused(bad):
    with pytest.raises(StoreError, match="expansion_search"):
        IndexParams.of({"expansion_search": bad})


def _filled(params: dict, n: int = 600) -> VectorIndex:
    idx = VectorIndex(DIM, {"exact_below": 0, **params})
    vecs = _unit(np.random.default_rng(0).normal(size=(n, DIM)))
    idx.add(np.arange(1, n + 1, dtype=np.uint64), idx.rows(vecs))
    return idx


def test_search_uses_the_breadth_of_the_live_count(monkeypatch):
    monkeypatch.setattr(index_mod, "EF_BASE_SIZE", 100)  # so a small index is "large"
    idx = _filled({})
    q = _unit(np.random.default_rng(1).normal(size=(1, DIM)))
    idx.search(q, 5)
    assert idx._index.expansion_search == expansion_for(600) > index_mod.EF_BASE
    idx.remove(np.arange(1, 501, dtype=np.uint64))  # 100 live: back to the base breadth
    idx.search(q, 5)
    assert idx._index.expansion_search == index_mod.EF_BASE


def test_a_fixed_breadth_is_what_the_graph_searches_with(monkeypatch):
    monkeypatch.setattr(index_mod, "EF_BASE_SIZE", 100)
    idx = _filled({"expansion_search": 24})
    idx.search(_unit(np.ones((1, DIM))), 5)
    assert idx._index.expansion_search == idx.search_breadth() == 24


def test_store_config_reaches_the_index(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_SECRET", "test key for the breadth tests")
    store = SQLiteStore(tmp_path / "s.db", dim=DIM, watch=False, index={"expansion_search": 300})
    try:
        assert store._live.index.search_breadth(10**8) == 300
    finally:
        store.close()
    store = SQLiteStore(tmp_path / "s.db", dim=DIM, watch=False)
    try:
        assert store._live.index.search_breadth(10**7) == expansion_for(10**7) > index_mod.EF_BASE
    finally:
        store.close()
