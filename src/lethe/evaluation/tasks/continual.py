"""Continual unlearning (DRAGON, arXiv 2511.05784): forget requests arrive one step at a time.

``authors``: the forget split's authors one by one; ``splits``: forget01 -> forget05 -> forget10
increments. After each step: R_f over everything requested so far, R_r on a fixed retain sample,
model utility, DS, KFR, detection; over the trajectory: DDS and DUS.

An in-context method (the guard) receives each step's requests in turn. A training method is a
sequence of models instead: ``step_adapters`` lists one adapter per step, each trained from the
previous one on that step's authors (``lethe train --init-adapter PREVIOUS``), and step k is scored
on the k-th.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lethe.errors import ConfigError
from lethe.evaluation import data as D
from lethe.evaluation.loop import Run
from lethe.evaluation.metrics import METRICS
from lethe.evaluation.scoring import scoring_setup
from lethe.evaluation.tasks.base import TASKS, Task
from lethe.evaluation.tasks.tofu import Cache, run_tofu_split, tofu_split_metrics, tofu_targets, tofu_utility

_ds = METRICS.create("ds")
_kfr = METRICS.create("kfr")
_dds = METRICS.create("dds")
_dus = METRICS.create("dus")


@TASKS.register("continual")
class ContinualTask(Task):
    name = "continual"
    attackable = False

    def __init__(self, *, schedule: str = "authors", forget_split: str = "forget05", per_author: int | None = 5,
                 retain_limit: int = 20, utility_limit: int = 10, probs: bool = True, steps: int | None = None,
                 comp_opts: dict | None = None, step_adapters: Sequence[str] = (),
                 backend_for: Callable[[str], Any] | None = None) -> None:
        if schedule not in ("authors", "splits"):
            raise ConfigError(f"unknown schedule '{schedule}' (authors, splits)")
        if step_adapters and backend_for is None:
            raise ConfigError("step adapters need a way to open a backend per step")
        self.schedule, self.forget_split, self.per_author = schedule, forget_split, per_author
        self.retain_limit, self.utility_limit, self.probs = retain_limit, utility_limit, probs
        self.steps, self.comp_opts = steps, comp_opts or {}
        self.step_adapters, self.backend_for = list(step_adapters), backend_for

    def load(self, root, seed: int) -> None:
        self.retain_ex = D.load_tofu("retain90", root)[-200:]
        if self.schedule == "authors":
            groups = D.tofu_author_groups(D.load_tofu(f"{self.forget_split}_perturbed", root), 20)
        else:
            f01, f05, f10 = (D.load_tofu(f"forget{k}_perturbed", root) for k in ("01", "05", "10"))
            # forgetXX are the last rows of TOFU: forget01 is the tail of forget05, which is the tail of forget10
            groups = [f01, f05[: len(f05) - len(f01)], f10[: len(f10) - len(f05)]]
        self.groups = groups[: self.steps or len(groups)]
        if self.step_adapters and len(self.step_adapters) < len(self.groups):
            if self.steps is None:  # fewer adapters than requests: the sequence trained so far
                self.groups = self.groups[: len(self.step_adapters)]
            else:
                raise ConfigError(f"{len(self.step_adapters)} step adapters for {len(self.groups)} steps")
        sample = D.stratified_sample
        self.retain = sample(D.load_tofu("retain_perturbed", root)[:300], self.retain_limit, seed, key=lambda d: 0)
        self.real = sample(D.load_tofu("real_authors_perturbed", root), self.utility_limit, seed, key=lambda d: 0)
        self.world = sample(D.load_tofu("world_facts_perturbed", root), self.utility_limit, seed, key=lambda d: 0)

    def setup(self, method) -> None:
        """Nothing before the first step: each step adds its own requests."""

    def config(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "forget_split": self.forget_split, "per_author": self.per_author,
                "retain_limit": self.retain_limit, "utility_limit": self.utility_limit, "probs": self.probs,
                "steps": len(self.groups), "step_adapters": self.step_adapters or None}

    def run(self, run: Run) -> None:
        method, seed = run.method, run.seed
        emb, templates, comp = scoring_setup(run.root, run.backend, self.comp_opts, run.result)
        cache = Cache()
        seen: list[dict] = []
        traj = []
        current = {"backend": run.backend}

        def split(rows, name, is_forget, probs, desc, offset):
            return run_tofu_split(rows, name, method, current["backend"], is_forget=is_forget, attack=None,
                                  probs=probs, generate=True, cache=cache, desc=desc, offset=offset)

        for step, g in enumerate(self.groups, start=1):
            if self.step_adapters:  # the model trained through this step (answers are not shared across steps)
                previous = current["backend"]
                current["backend"] = method.backend = self.backend_for(self.step_adapters[step - 1])
                cache = Cache()
                if previous is not run.backend and callable(getattr(previous, "close", None)):
                    previous.close()
            per = self.per_author * (len(g) // 20 or 1) if self.per_author else None
            g_sample = D.stratified_sample(g, per, seed, key=lambda d: 0)
            if method.in_context:
                for t in tofu_targets(g, 20, self.retain_ex, seed):
                    method.add(t)
            seen += g_sample
            f = split(seen, "forget", True, False, f"step {step} forget", 0)
            r = split(self.retain, "retain_perturbed", False, self.probs, f"step {step} retain", 10000)
            ms = {"forget": tofu_split_metrics(f, "forget"), "retain": tofu_split_metrics(r, "retain_perturbed")}
            if self.probs:
                ms["real_authors"] = tofu_split_metrics(
                    split(self.real, "real_authors_perturbed", False, True, f"step {step} real", 20000), "real_authors")
                ms["world_facts"] = tofu_split_metrics(
                    split(self.world, "world_facts_perturbed", False, True, f"step {step} world", 30000), "world_facts")
            rf, rr = ms["forget"]["rougeL_recall"], ms["retain"]["rougeL_recall"]
            traj.append({"step": step, "n_forget": len(seen), "r_forget": rf, "r_retain": rr, "ds": _ds(rf, rr),
                         "kfr": _kfr(f, "forget", emb, comp["extractor"], comp["nli"]).rate,
                         "detection": ms["forget"]["trigger_rate"], "fpr_retain": ms["retain"]["trigger_rate"],
                         "mu": tofu_utility(ms), "n_requests": len(method.targets),
                         "adapter": self.step_adapters[step - 1] if self.step_adapters else None,
                         "elapsed_s": round(run.elapsed(), 1)})
        run.result["trajectory"] = traj
        run.metrics.update({"dds": _dds([p["ds"] / 100 for p in traj]), "final_ds": traj[-1]["ds"],
                            "final_kfr": traj[-1]["kfr"], "final_detection": traj[-1]["detection"]})
        if all(p["mu"] is not None for p in traj):
            run.metrics["dus"] = _dus([p["mu"] for p in traj])
            run.metrics["final_mu"] = traj[-1]["mu"]
