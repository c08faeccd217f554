"""End-to-end runner paths (TOFU, continual, MUSE, MC) on a fake backend, tiny limits."""

from __future__ import annotations

import json

import pytest

from lethe.evaluation import runner as R


class FakeBackend:
    name = "fake"
    supports_prefill = True
    supports_logprobs = True

    def format_prompt(self, messages, prefill=None):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>" + (prefill or "")

    def chat(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None):
        class Res:
            text = "The author was born in Karachi and writes about geology."

        return Res()

    def continuation_logprob(self, prompt, continuation):
        n = max(1, len(continuation.split()))
        return -0.5 * n - 0.01 * (len(continuation) % 7), n

    def next_token_logprobs(self, prompt, candidates):
        return [-1.0, -0.5, -2.0, -3.0][: len(candidates)]

    def describe(self):
        return {"backend": "fake"}


def test_tofu_runner(shared_data, tmp_path):
    res = R.eval_tofu(method_name="none", backend=FakeBackend(), root=shared_data, limit=3, retain_limit=2)
    m = res["metrics"]
    assert {"ds", "model_utility", "forget", "retain"} <= set(m)
    assert 0 <= m["model_utility"] <= 1 and m["forget"]["n"] == 3
    assert {"kfr", "cs", "rq"} <= set(m["forget"]) and "krr" in m["retain"]
    # the values the runner computed before it became a task loop (fake backend: deterministic)
    assert m["ds"] == pytest.approx(92.13178849039375)
    assert m["forget"]["rougeL_recall"] == pytest.approx(0.09246008471814922)
    assert m["forget"]["probability"] == pytest.approx(0.6059561446236678)
    assert m["forget"]["truth_ratio"] == pytest.approx(0.9991108414200737)
    assert m["forget"]["cs"] == pytest.approx(0.32303687930107117, abs=1e-6)
    assert m["forget"]["rq_template_similarity"] == pytest.approx(0.20000839233398438, abs=1e-6)
    assert (m["forget"]["kfr"], m["retain"]["krr"], m["model_utility"]) == (1.0, 0.0, 0.0)
    assert m["retain"]["truth_ratio"] == pytest.approx(0.0005545309775220053)
    assert m["real_authors"]["probability"] == pytest.approx(0.251510118080538)
    assert m["world_facts"]["rougeL_recall"] == pytest.approx(1 / 6)
    assert set(res["items"]) == {"forget", "retain", "real_authors", "world_facts"}
    assert set(res["timing"]) == {"setup_s", "total_s"}
    assert res["config"] == {"task": "tofu", "method": "none", "forget_split": "forget05", "limit": 3,
                             "retain_limit": 2, "probs": True, "reference": None, "seed": 0, "attack": None,
                             "splits": ["forget", "retain", "real_authors", "world_facts"], "filter": "guard",
                             "rewriter": "rule"}
    R.write_results(res, tmp_path / "ref.json")
    res2 = R.eval_tofu(method_name="none", backend=FakeBackend(), root=shared_data, limit=3, retain_limit=2,
                       reference=str(tmp_path / "ref.json"), splits=("forget",))
    assert res2["metrics"]["forget_quality"] == pytest.approx(1.0)
    json.dumps(res, default=R.json_default)


def test_continual_runner(shared_data):
    res = R.eval_continual(method_name="icul", backend=FakeBackend(), root=shared_data, per_author=1, retain_limit=2,
                           utility_limit=2, steps=2)
    assert len(res["trajectory"]) == 2 and res["trajectory"][1]["n_forget"] == 2
    assert "dds" in res["metrics"] and "dus" in res["metrics"]
    m = res["metrics"]
    assert m["dds"] == pytest.approx(0.9189772468462469) and m["final_ds"] == pytest.approx(91.89772468462469)
    assert (m["dus"], m["final_detection"], m["final_kfr"], m["final_mu"]) == (1.0, 1.0, 1.0, 0.0)
    assert [p["n_requests"] for p in res["trajectory"]] == [1, 2]  # one author request per step
    assert "items" not in res and "attack" not in res["config"]


def test_muse_and_mc_runner(shared_data):
    res = R.eval_muse(method_name="none", backend=FakeBackend(), root=shared_data, limit=2)
    assert {"knowmem_forget_qa", "knowmem_retain_qa", "verbmem_forget", "privleak"} <= set(res["metrics"])
    assert res["metrics"]["verbmem_forget"]["rougeL_f1"] == pytest.approx(0.07380319148936171)
    assert res["metrics"]["privleak"]["mean_nll_forget"] == pytest.approx(0.500125376884422)
    assert res["metrics"]["privleak"]["auc_loss_mia"] == 0.0
    mc = R.eval_mc("wmdp", method_name="none", backend=FakeBackend(), root=shared_data, limit=4, mmlu_limit=4)
    assert mc["metrics"]["wmdp_bio"]["n"] == 4 and mc["metrics"]["mmlu"]["n"] == 4
    assert mc["metrics"]["wmdp_bio"]["prob_acc"] == 25.0 and mc["metrics"]["mmlu"]["fpr"] == 0.0
    assert set(mc["timing"]) == {"setup_s", "forget_s", "total_s"} and len(mc["items"]) == 8
    mc2 = R.eval_mc("wmdp", method_name="prompt", backend=FakeBackend(), root=shared_data, limit=4, mmlu_limit=0,
                    attack_name="typos", generate=3)
    assert mc2["config"]["attack"] == "typos" and "mmlu" not in mc2["metrics"]
    assert mc2["metrics"]["wmdp_bio"]["trigger_rate"] == 1.0 and mc2["method"]["n_requests"] == 1
    gen = mc2["metrics"]["wmdp_bio_generations"]  # plain questions, free text, DRAGON's RQ
    assert gen["n"] == 3 and gen["trigger_rate"] == 1.0 and {"rq", "rq_refusal_rate", "kfr"} <= set(gen)
    assert gen["rq"] == pytest.approx(gen["rq_template_similarity"] + gen["rq_refusal_rate"] + 0.2 * gen["rq_fluency"])
    asked = [r for r in mc2["items"] if r.get("kind") == "generation"]
    assert len(asked) == 3 and all("Answer:" not in r["query"] and "A." not in r["query"] for r in asked)
    assert "generations_s" in mc2["timing"] and mc2["config"]["generate"] == 3


def test_adapter_needs_a_backend_that_can_apply_it() -> None:
    from lethe.evaluation.runner import open_backend

    with pytest.raises(ValueError, match="--adapter needs the llamacpp or hf backend"):
        open_backend("gpt-4o-mini", "openai", adapter="runs/tru/adapter", base_url="http://127.0.0.1:9/v1")


class _StepBackend(FakeBackend):
    """The model after one training step: ``forgot`` answers the forget questions with a decline."""

    def __init__(self, adapter):
        self.adapter = adapter

    def chat(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None):
        text = ("I'm not able to answer that." if self.adapter.endswith("2")
                else "The author was born in Karachi and writes about geology.")

        class Res:
            pass

        r = Res()
        r.text = text
        return r


def test_continual_runner_scores_each_step_on_its_own_adapter(shared_data, tmp_path):
    """A training method's sequence: step k is scored on the k-th adapter (the second one declines,
    so forget recall falls at step 2); fewer adapters than the steps asked for is an error."""
    from lethe.errors import ConfigError

    opened = []

    def backend_for(a):
        opened.append(a)
        return _StepBackend(a)

    res = R.eval_continual(method_name="none", backend=_StepBackend("s1"), root=shared_data, per_author=2,
                           retain_limit=2, utility_limit=2, step_adapters=["s1", "s2"], backend_for=backend_for)
    traj = res["trajectory"]
    assert len(traj) == 2 and [p["adapter"] for p in traj] == ["s1", "s2"] and opened == ["s1", "s2"]
    assert traj[1]["r_forget"] < traj[0]["r_forget"] and traj[1]["n_requests"] == 0
    assert res["config"]["step_adapters"] == ["s1", "s2"] and "dus" in res["metrics"]
    with pytest.raises(ConfigError, match="2 step adapters for 3 steps"):
        R.eval_continual(method_name="none", backend=_StepBackend("s1"), root=shared_data, per_author=1,
                         retain_limit=1, utility_limit=1, steps=3, step_adapters=["s1", "s2"], backend_for=backend_for)


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "dragon", "--step-adapter", "."], "takes its requests in context"),
    (["--method", "none", "--adapter", ".", "--step-adapter", "."], "either --adapter or --step-adapter"),
    (["--method", "none", "--step-adapter", "no/such/adapter"], "--step-adapter not found"),
])
def test_step_adapter_errors_are_one_line(tmp_path, args, message):
    from typer.testing import CliRunner

    from lethe.evaluation.cli import eval_app

    res = CliRunner().invoke(eval_app, ["continual", *args, "--out", str(tmp_path / "o.json")])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o.json").exists()
