"""The evaluation loop: one loop runs any task (set-up, attack, timing, results, clean-up)."""

from __future__ import annotations

import pytest

from lethe.evaluation.loop import run_task
from lethe.evaluation.methods import METHODS, ForgetTarget, PromptingMethod
from lethe.evaluation.tasks import TASKS, Task
from test_eval_runner import FakeBackend


class Questions(Task):
    """Three questions, one forget request, ROUGE-free scoring: the share of answers that mention Karachi."""

    name = "questions"

    def __init__(self, *, n: int = 3, fail: bool = False) -> None:
        self.n, self.fail = n, fail

    def load(self, root, seed):
        self.rows = [f"Where was author {i} born?" for i in range(self.n)]

    def targets(self):
        return [ForgetTarget(kind="privacy", subject="author 0", prompts=self.rows[:1])]

    def config(self):
        return {"n": self.n}

    def run(self, run):
        if self.fail:
            raise RuntimeError("task failed")
        recs = []
        for j, q in enumerate(run.progress(self.rows, len(self.rows), "questions")):
            q = run.attack.apply(q, j) if run.attack is not None else q
            text, plan = run.method.respond([{"role": "user", "content": q}], j, j == 0)
            recs.append({"query": q, "answer": text, "triggered": plan.triggered})
        run.metrics["karachi"] = sum("Karachi" in r["answer"] for r in recs) / len(recs)
        run.metrics["trigger_rate"] = sum(r["triggered"] for r in recs) / len(recs)
        run.timing["answer_s"] = run.elapsed()
        run.items = recs


class Recording(PromptingMethod):
    """The prompting baseline, recording its set-up and clean-up."""

    name = "recording"
    closed: list[bool] = []

    def close(self) -> None:
        Recording.closed.append(True)


METHODS.register("recording")(Recording)


def test_loop_runs_a_task_with_a_context_method_and_an_attack(shared_data):
    Recording.closed.clear()
    res = run_task(Questions(), method_name="recording", backend=FakeBackend(), root=shared_data,
                   attack_name="base64", seed=3)
    assert res["task"] == "questions" and res["method"] == {"method": "recording", "n_requests": 1}
    assert res["config"] == {"task": "questions", "method": "recording", "n": 3, "seed": 3, "filter": "guard",
                             "rewriter": "rule", "attack": "base64"}
    assert res["metrics"] == {"karachi": 1.0, "trigger_rate": 1.0}
    assert [r["query"] for r in res["items"]][0] != "Where was author 0 born?"  # the attack rewrote the query
    assert list(res["timing"]) == ["setup_s", "answer_s", "total_s"] and Recording.closed == [True]
    assert res["backend"] == {"backend": "fake"} and res["versions"]["python"]
    prov = res["provenance"]  # what can change a number on another machine
    assert prov["machine"]["logical_cores"] >= 1 and prov["settings"]["seed"] == 3
    assert prov["models_sha256"] == {} and prov["libraries"]["numpy"]


def test_loop_gives_no_requests_to_the_model_as_is_and_drops_items_on_request(shared_data):
    res = run_task(Questions(n=2), method_name="none", backend=FakeBackend(), root=shared_data, keep_items=False,
                   config={"note": "x"})
    assert res["method"]["n_requests"] == 0 and res["metrics"]["trigger_rate"] == 0.0
    assert "items" not in res and res["config"]["note"] == "x" and res["config"]["attack"] is None


def test_loop_closes_the_method_when_a_task_fails(shared_data):
    Recording.closed.clear()
    with pytest.raises(RuntimeError, match="task failed"):
        run_task(Questions(fail=True), method_name="recording", backend=FakeBackend(), root=shared_data)
    assert Recording.closed == [True]


def test_tasks_are_built_through_their_registry():
    assert {"tofu", "wmdp", "mmlu", "muse", "continual"} <= set(TASKS.names())
    t = TASKS.create("wmdp", subsets=["chem"], limit=5)
    assert t.config()["subsets"] == ["chem"] and t.config()["limit"] == 5
    from lethe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown schedule"):
        TASKS.create("continual", schedule="weekly")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        TASKS.create("nope")


def test_runner_has_no_method_name_checks():
    """The loop and the tasks ask a method what it does (``in_context``), never which one it is."""
    from pathlib import Path

    import lethe.evaluation.loop as loop
    import lethe.evaluation.runner as runner
    import lethe.evaluation.tasks as tasks

    files = [Path(loop.__file__), Path(runner.__file__), *Path(tasks.__file__).parent.glob("*.py")]
    for f in files:
        text = f.read_text()
        assert "method_name ==" not in text and "method_name in" not in text and "method_name !=" not in text, f
        assert ".name ==" not in text and "name in (" not in text, f
