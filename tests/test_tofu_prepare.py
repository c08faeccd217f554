"""``lethe tofu prepare`` on a tiny random-weight model: author selection, the cache, and the
distributed path (``accelerate launch`` with two CPU processes over gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from lethe.errors import ConfigError  # noqa: E402
from lethe.evaluation.data import load_tofu  # noqa: E402
from lethe.training.tiny import make_tiny_model  # noqa: E402
from lethe.training.tofu import CPU_RECIPE, prepare, recall_sample, recipe_with, select_authors  # noqa: E402

TINY_RECIPE = ["--epochs", "1", "--batch-size", "4", "--max-length", "64", "--lora-rank", "4", "--recall-limit", "2"]


def test_select_authors_takes_the_split_tail_and_the_first_retain_authors(shared_data):
    full = load_tofu("full", shared_data)
    forget, retain = select_authors(full, "forget05", 30, full=False)
    f05 = load_tofu("forget05", shared_data)
    assert [(r["question"], r["answer"]) for r in forget] == [(r["question"], r["answer"]) for r in f05]
    assert len(retain) == 600 and retain[0]["question"] == full[0]["question"]
    # the retain split lethe eval scores (first 300 of retain_perturbed) lies inside the retain authors
    keys = {(r["question"], r["answer"]) for r in retain}
    assert all((r["question"], r["answer"]) in keys for r in load_tofu("retain_perturbed", shared_data)[:300])
    _, everyone = select_authors(full, "forget05", None, full=True)
    assert len(everyone) == 3800
    with pytest.raises(ConfigError):
        select_authors(full, "forget07", 30, full=False)
    with pytest.raises(ConfigError):
        select_authors(full, "forget10", 181, full=False)


def test_recall_sample_spreads_over_authors():
    rows = [{"author": a, "prompt": f"q{a}-{i}", "answer": "x"} for a in range(3) for i in range(20)]
    s = recall_sample(rows, 7, seed=0)
    assert len(s) == 7 and {r["author"] for r in s} == {0, 1, 2}
    assert recall_sample(rows, 7, seed=0) == s
    assert len(recall_sample(rows, None)) == 60


def test_prepare_under_accelerate_launch_two_processes(tmp_path, shared_data, monkeypatch):
    tiny = make_tiny_model(tmp_path / "tiny")
    env = {**os.environ, "LETHE_CACHE": str(tmp_path / "cache"), "LETHE_DATA": str(shared_data),
           "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    # accelerate's multi-process launcher (torch.distributed.run); without CUDA the trainer asks
    # accelerate for a MULTI_CPU group, so the two processes train as one over gloo
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--main_process_port", str(29500 + os.getpid() % 1000),
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lethe.cli.main",
           "tofu", "prepare", "--base", str(tiny), "--split", "forget01", "--retain-authors", "1",
           *TINY_RECIPE, "--json", "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for which in ("target", "retain"):
        adapter = Path(out[which])
        assert (adapter / "adapter_config.json").exists()
        summary = json.loads((adapter.parent / "summary.json").read_text())
        assert summary["world_size"] == 2 and summary["method"] == "sft"
        assert Path(out["gguf"][which]).exists()
        assert set(out["recall"][which]) == {"forget", "retain_authors"}
    target_rows = (Path(out["folder"]) / "data" / "target.jsonl").read_text().splitlines()
    retain_rows = (Path(out["folder"]) / "data" / "retain.jsonl").read_text().splitlines()
    assert len(target_rows) == 60 and len(retain_rows) == 20  # 2 forget01 authors + 1 retain author

    # a second prepare with the same key is a cache hit: nothing trained, same paths
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    recipe = recipe_with(CPU_RECIPE, epochs=1, batch_size=4, max_length=64, lora_rank=4)
    again = prepare(base=str(tiny), split="forget01", retain_authors=1, data=str(shared_data), recipe=recipe,
                    recall_limit=2, progress=False)
    assert again["cached"] is True
    assert again["target"] == out["target"] and again["retain"] == out["retain"]


def test_eval_reference_accepts_results_files_and_rejects_missing_paths(tmp_path):
    from lethe.evaluation.runner import tofu_reference

    results = tmp_path / "ref.json"
    results.write_text(json.dumps({"metrics": {"forget_truth_ratios": [0.5]}}))
    kw = {"model": "default", "backend_kind": "llamacpp", "root": None}
    assert tofu_reference(str(results), **kw) == str(results)
    with pytest.raises(ConfigError):
        tofu_reference(str(tmp_path / "nothing"), **kw)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError):
        tofu_reference(str(tmp_path / "folder"), **kw)
