"""The evaluation loop: one run of a method on a task, from set-up to results JSON.

A task (:class:`lethe.evaluation.tasks.base.Task`: TOFU, WMDP / MMLU, MUSE, continual) says what
is asked (items), what is forgotten (forget requests) and how answers are scored. The loop owns
everything else, the same for every task: building the method, registering the task's forget
requests with it, the attack, timing, progress bars, the results object and the method's
clean-up (also when a task fails). A results file is one JSON object::

    {"task", "config": {...}, "versions": {...}, "method": {...}, "backend": {...},
     "components": {...}, "metrics": {...}, "timing": {...},
     "trajectory": [...] (continual), "items": [...] (with --items)}
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lethe.backends.base import ChatBackend
from lethe.evaluation import data as D
from lethe.evaluation.attacks import ATTACKS, Attack
from lethe.evaluation.methods import Method, create_method
from lethe.provenance import provenance

if TYPE_CHECKING:
    from lethe.evaluation.tasks.base import Task


def _threads(described: dict) -> int | None:
    n = described.get("n_threads")
    return n if isinstance(n, int) else None


def versions() -> dict[str, str | None]:
    """Versions of the packages that can change a number."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("lethe-unlearn", "torch", "transformers", "llama_cpp_python", "sentence-transformers", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["llama_cpp"] = out.pop("llama_cpp_python")
    out["lethe"] = out.pop("lethe-unlearn")
    return out


def progress(it: Iterable, total: int | None = None, desc: str = "") -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="item", dynamic_ncols=True, leave=False)


def open_backend(model: str = "default", kind: str = "llamacpp", adapter: str | None = None,
                 base_url: str | None = None, seed: int = 0, threads: int | None = None) -> ChatBackend:
    """``--model`` spec: the default's name, a GGUF path (llamacpp), a hub id/folder (hf), or an API model (openai)."""
    from lethe.backends import BACKENDS, load_backend
    from lethe.config import DEFAULT_MODEL, BackendConfig

    model = DEFAULT_MODEL if model in ("default", "", None) else model
    threads = threads or int(os.environ.get("LETHE_THREADS", "0")) or None
    if kind == "llamacpp" and threads:
        # llama.cpp threads spin-wait: on a busy machine fewer threads can be much faster
        return BACKENDS.create("llamacpp", model, n_threads=threads, seed=seed, adapter=adapter)
    if adapter and kind not in ("llamacpp", "hf"):
        raise ValueError(f"--adapter needs the llamacpp or hf backend, not {kind!r}")
    return load_backend(BackendConfig(kind=kind, model=model, base_url=base_url, seed=seed,  # type: ignore[arg-type]
                                      adapter=adapter))


def make_attack(name: str | None, seed: int, root, backend) -> Attack | None:
    """The attack named on the command line; ``None`` for no attack."""
    if not name or name == "none":
        return None
    return ATTACKS.create(name, seed=seed, data_root=root, backend=backend)


def write_results(result: dict, out: str | Path | None) -> None:
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=json_default))


def json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


@dataclass
class Run:
    """What a task's ``run`` gets: the method under test and the run's shared settings.

    ``result`` is the results object being built (a task fills ``metrics``, ``components`` and any
    task-specific key); ``items`` collects per-item records (kept with ``--items``); ``timing``
    takes task-specific durations beside the loop's ``setup_s`` and ``total_s``."""

    method: Method
    backend: ChatBackend
    root: Any
    seed: int
    attack: Attack | None
    result: dict
    started: float
    items: Any = None
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict:
        return self.result["metrics"]

    def progress(self, it: Iterable, total: int | None = None, desc: str = "") -> Iterable:
        return progress(it, total, desc)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def run_task(task: Task, *, method_name: str, backend: ChatBackend, root, seed: int = 0, home=None,
             filter_kind: str = "guard", rewriter: str = "rule", attack_name: str | None = None,
             keep_items: bool = True, config: dict | None = None) -> dict:
    """Run ``method_name`` on ``task`` and return the results object (see the module docstring).

    The method is built with the benchmark's refusal templates (Guardrail+ replies with one);
    methods that act on the context (``Method.in_context``) get the task's forget requests before
    the first item; the method is closed whatever happens."""
    t0 = time.perf_counter()
    refusals = D.load_refusal_templates(root)
    task.load(root, seed)
    method = create_method(method_name, backend, home=home, seed=seed, refusals=refusals, filter=filter_kind,
                           rewriter=rewriter)
    try:
        if method.in_context:
            task.setup(method)
        setup_s = time.perf_counter() - t0
        attack = make_attack(attack_name, seed, root, backend)
        cfg = {"task": task.name, "method": method_name, **task.config(), "seed": seed,
               "filter": filter_kind, "rewriter": rewriter, **(config or {})}
        if task.attackable:
            cfg["attack"] = attack_name
        described = backend.describe()
        result = {"task": task.name, "config": cfg, "versions": versions(), "method": method.describe(),
                  "backend": described, "metrics": {}, "components": {}, "timing": {},
                  "provenance": provenance([described.get("path"), described.get("adapter")],
                                           threads=_threads(described), seed=seed)}
        run = Run(method=method, backend=backend, root=root, seed=seed, attack=attack, result=result, started=t0)
        task.run(run)
        result["timing"] = {"setup_s": round(setup_s, 1), **{k: round(v, 1) for k, v in run.timing.items()},
                            "total_s": round(time.perf_counter() - t0, 1)}
        if keep_items and run.items is not None:
            result["items"] = run.items
        return result
    finally:
        method.close()
