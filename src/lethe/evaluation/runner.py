"""The benchmark entry points of ``lethe eval``: build a task, run it with the loop, return the results.

Each ``eval_*`` function keeps the keyword interface of its command (``lethe eval tofu|wmdp|mmlu|
muse|continual``) and is ``run_task(TASKS.create(...), ...)``; the work is in
:mod:`lethe.evaluation.loop` (method set-up, attack, timing, results, clean-up) and
:mod:`lethe.evaluation.tasks` (items, forget requests, scoring). The helpers of those modules that
benchmarks and tests use are re-exported here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from lethe.backends.base import ChatBackend
from lethe.errors import ConfigError
from lethe.evaluation.loop import (
    json_default,
    make_attack,
    open_backend,
    progress,
    run_task,
    versions,
    write_results,
)
from lethe.evaluation.scoring import (
    components,
    describe_components,
    load_generations,
    score_generations,
    score_records,
)
from lethe.evaluation.tasks import TASKS
from lethe.evaluation.tasks.mc import (
    load_mmlu_sample,
    mc_aggregate,
    mmlu_dev_benign,
    mmlu_retain_examples,
    mmlu_shots,
    run_mc_items,
    wmdp_targets,
)
from lethe.evaluation.tasks.tofu import (
    Cache,
    run_tofu_split,
    tofu_split_metrics,
    tofu_targets,
    tofu_utility,
)

__all__ = [
    "Cache", "components", "describe_components", "eval_continual", "eval_mc", "eval_muse", "eval_tofu",
    "json_default", "load_generations", "load_mmlu_sample", "make_attack", "mc_aggregate", "mmlu_dev_benign",
    "mmlu_retain_examples", "mmlu_shots", "open_backend", "progress", "run_mc_items", "run_tofu_split",
    "score_generations", "score_records", "tofu_reference", "tofu_split_metrics", "tofu_targets", "tofu_utility",
    "versions", "wmdp_targets", "write_results",
]


def _common(kw: dict) -> dict:
    keys = ("method_name", "backend", "root", "seed", "home", "filter_kind", "rewriter", "attack_name",
            "keep_items", "config")
    return {k: kw[k] for k in keys if k in kw}


def eval_mc(task: str, *, method_name: str, backend: ChatBackend, root, subsets: Sequence[str] = ("bio",),
            limit: int | None = 100, mmlu_limit: int | None = 100, seed: int = 0, kshot: int = 0,
            fmt: str = "chat", scorer: str = "logprob", attack_name: str | None = None, home=None,
            store_format: str = "mc", filter_kind: str = "guard", rewriter: str = "rule", benign: str = "mmlu-dev",
            mmlu_subjects: Sequence[str] | None = None, keep_items: bool = True, config: dict | None = None,
            concurrency: int = 1, generate: int = 0, max_tokens: int = 96) -> dict:
    """``task='wmdp'``: WMDP subsets (+ MMLU on the same method instance; ``generate`` > 0: free-text
    answers to that many plain WMDP questions per subset, with RQ); ``task='mmlu'``: MMLU only."""
    t = TASKS.create(task, subsets=subsets, limit=limit, mmlu_limit=mmlu_limit, kshot=kshot, fmt=fmt, scorer=scorer,
                     store_format=store_format, benign=benign, mmlu_subjects=mmlu_subjects, concurrency=concurrency,
                     **({"generate": generate, "max_tokens": max_tokens} if task == "wmdp" else {}))
    return run_task(t, **_common(locals()))


def eval_tofu(*, method_name: str, backend: ChatBackend, root, forget_split: str = "forget05", limit: int | None = None,
              retain_limit: int | None = None, seed: int = 0, attack_name: str | None = None, home=None,
              probs: bool = True, splits: Sequence[str] = ("forget", "retain", "real_authors", "world_facts"),
              filter_kind: str = "guard", rewriter: str = "rule", reference: str | None = None,
              comp_opts: dict | None = None, keep_items: bool = True, max_tokens: int = 200,
              config: dict | None = None) -> dict:
    """TOFU (see :mod:`lethe.evaluation.tasks.tofu`)."""
    t = TASKS.create("tofu", forget_split=forget_split, limit=limit, retain_limit=retain_limit, probs=probs,
                     splits=splits, reference=reference, comp_opts=comp_opts, max_tokens=max_tokens)
    return run_task(t, **_common(locals()))


def eval_continual(*, method_name: str, backend: ChatBackend, root, schedule: str = "authors",
                   forget_split: str = "forget05", per_author: int | None = 5, retain_limit: int = 20,
                   utility_limit: int = 10, seed: int = 0, home=None, probs: bool = True, filter_kind: str = "guard",
                   rewriter: str = "rule", steps: int | None = None, comp_opts: dict | None = None,
                   step_adapters: Sequence[str] = (), backend_for=None, config: dict | None = None) -> dict:
    """Continual unlearning (see :mod:`lethe.evaluation.tasks.continual`); ``step_adapters`` with
    ``backend_for(adapter)``: a training method's sequence of models, one per step."""
    t = TASKS.create("continual", schedule=schedule, forget_split=forget_split, per_author=per_author,
                     retain_limit=retain_limit, utility_limit=utility_limit, probs=probs, steps=steps,
                     comp_opts=comp_opts, step_adapters=step_adapters, backend_for=backend_for)
    return run_task(t, **_common(locals()))


def eval_muse(*, method_name: str, backend: ChatBackend, root, corpus: str = "news", limit: int | None = 50,
              seed: int = 0, attack_name: str | None = None, home=None, filter_kind: str = "guard",
              rewriter: str = "rule", parts: Sequence[str] = ("knowmem", "verbmem", "privleak"),
              keep_items: bool = True, config: dict | None = None) -> dict:
    """MUSE (see :mod:`lethe.evaluation.tasks.muse`)."""
    t = TASKS.create("muse", corpus=corpus, limit=limit, parts=parts)
    return run_task(t, **_common(locals()))


def tofu_reference(reference: str, *, model: str, backend_kind: str, root, forget_split: str = "forget05",
                   limit: int | None = None, seed: int = 0, max_tokens: int = 200) -> str:
    """A results file holding the reference model's forget truth ratios, for forget quality.

    ``reference`` is such a results file already (returned as is), or a trained model: a PEFT
    adapter folder or GGUF LoRA (``lethe tofu prepare``'s ``retain``), applied to ``model`` on
    ``backend_kind`` like the evaluated adapter. Its forget split is run once (method ``none``,
    same split, limit and seed) and cached under ``$LETHE_CACHE/tofu-reference/``, keyed by the
    adapter's weights and those settings; later runs read the cached file."""
    from lethe.config import cache_dir

    path = Path(reference).expanduser()
    if path.is_file() and path.suffix == ".json":
        return str(path)
    if not path.exists():
        raise ConfigError(f"--reference not found: {reference} (a results JSON, a PEFT adapter folder or a GGUF LoRA)")
    weights = path / "adapter_model.safetensors" if path.is_dir() else path
    if not weights.exists():
        raise ConfigError(f"--reference {reference} is neither a results JSON nor an adapter (no {weights.name})")
    h = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    key = {"weights": h.hexdigest(), "model": model, "backend": backend_kind, "split": forget_split,
           "limit": limit, "seed": seed, "max_tokens": max_tokens}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir() / "tofu-reference" / f"{forget_split}-{name}.json"
    if out.exists():
        return str(out)
    backend = open_backend(model, backend_kind, str(path), seed=seed)
    result = eval_tofu(method_name="none", backend=backend, root=root, forget_split=forget_split, limit=limit,
                       seed=seed, splits=("forget",), max_tokens=max_tokens,
                       config={"reference_of": str(path), "reference_key": key})
    write_results(result, out)
    return str(out)
