"""Loaders read the shared/data layout and fail with a message naming what is missing."""

from __future__ import annotations

import json

import pytest

from lethe.evaluation import data as D
from lethe.evaluation.runner import score_generations


def test_missing_file_named(tmp_path):
    (tmp_path / "tofu").mkdir()
    with pytest.raises(D.DataError, match="forget05_perturbed"):
        D.load_tofu("forget05_perturbed", tmp_path)
    with pytest.raises(D.DataError, match="unknown TOFU split"):
        D.load_tofu("forget07", tmp_path)
    with pytest.raises(D.DataError, match="wmdp-chem"):
        D.load_wmdp("chem", tmp_path)


def test_shared_layout(shared_data):
    assert len(D.load_tofu("forget05_perturbed", shared_data)) == 200
    assert len(D.load_tofu("retain_perturbed", shared_data)) == 400
    assert len(D.load_refusal_templates(shared_data)) == 100
    bio = D.load_wmdp("bio", shared_data)
    assert len(bio) == 1273 and all(len(x["choices"]) == 4 for x in bio)
    assert len(D.load_mmlu("dev", root=shared_data)) == 285
    assert len(D.load_mmlu("test", ["anatomy"], shared_data)) == 135
    assert len(D.load_muse("news", "knowmem", "retain_qa", shared_data)) == 100
    assert len(D.load_muse("news", "privleak", "holdout", shared_data)) == 100
    syn = D.load_dragon_synthetic("bio", shared_data)
    assert len(syn) == 100 and len(syn[0]["choices"]) == 4
    sample = D.stratified_sample(bio, 100, seed=0, key="answer")
    counts = [sum(x["answer"] == a for x in sample) for a in range(4)]
    assert sum(counts) == 100 and max(counts) - min(counts) <= 3


def test_score_generations_file(tmp_path, shared_data):
    recs = [{"query": "Where was Hina Ameen born?", "generated_response": "I don't have that information.",
             "ground_truth": "Hina Ameen was born in Karachi, Pakistan."}]
    ret = [{"query": "Who wrote X?", "generated_response": "X was written by Jane Doe in 1990.",
            "ground_truth": "Jane Doe wrote X in 1990."}]
    (tmp_path / "f.json").write_text(json.dumps(recs))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in ret))
    res = score_generations(tmp_path / "f.json", "forget", root=shared_data, retain_path=tmp_path / "r.jsonl")
    m = res["metrics"]
    assert m["forget"]["kfr"] == 1.0 and m["retain"]["krr"] == 1.0
    assert m["forget"]["rq_refusal_rate"] == 1.0
    assert m["ds"] == pytest.approx(100 * ((m["forget"]["rougeL_recall"]) ** 2 + (1 - m["retain"]["rougeL_recall"]) ** 2) ** 0.5)
    assert res["components"]["nli"] == "heuristic"
