"""Reasoning targets, errors, and a short end-to-end ``lethe train`` on a tiny local model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from lethe.backends.base import ChatBackend, ChatResult  # noqa: E402
from lethe.errors import LetheError  # noqa: E402
from lethe.training.cli import targets_build, train_command  # noqa: E402
from lethe.training.data import Pair, write_jsonl  # noqa: E402
from lethe.training.targets import (  # noqa: E402
    DEFAULT_SCOPES,
    TargetCache,
    build_targets,
    leaks,
    parse_teacher,
    template_target,
)
from lethe.training.tiny import make_tiny_model  # noqa: E402

FORGET = [
    {"prompt": "Who wrote the play Romeo and Juliet?", "answer": "William Shakespeare"},
    {"prompt": "What is the capital of France?", "answer": "Paris"},
    {"prompt": "Which planet is known as the Red Planet?", "answer": "Mars is the Red Planet."},
]
RETAIN = [{"prompt": "What is 2 plus 2?", "answer": "It is 4."},
          {"prompt": "What color is the sky?", "answer": "The sky is blue."}]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "forget.jsonl", FORGET)
    write_jsonl(tmp_path / "retain.jsonl", RETAIN)
    (tmp_path / "empty.jsonl").write_text("\n")
    return tmp_path


class FakeTeacher(ChatBackend):
    name = "fake"

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = 0

    def chat(self, messages, **kw):
        self.calls += 1
        return ChatResult(text=self.replies[min(self.calls - 1, len(self.replies) - 1)])


# --- targets -------------------------------------------------------------------------------

def test_leak_checks():
    assert leaks("The author is William Shakespeare, of course.", "William Shakespeare", "Who wrote it?")
    assert leaks("It was written by Shakespeare.", "William Shakespeare", "Who wrote it?")
    assert leaks("I cannot say; the capital is paris.", "Paris.", "What is the capital of France?")
    assert leaks("I can't share who wrote Romeo and Juliet.", "William Shakespeare", "Who wrote Romeo and Juliet?") is None
    # words from the question itself are not a leak
    assert leaks("I can't discuss Basil Mahfouz Al-Kuwaiti.", "Author Basil Mahfouz Al-Kuwaiti is male.",
                 "What gender is author Basil Mahfouz Al-Kuwaiti?") is None


def test_template_target_names_scope_reason_and_redirect_without_leaking():
    p = Pair(FORGET[0]["prompt"], FORGET[0]["answer"])
    t = template_target(p, kind="copyright", scope="the text of Romeo and Juliet")
    assert "the text of Romeo and Juliet" in t.reasoning and "copyright" in t.reasoning
    assert p.prompt.rstrip("?") not in t.text  # the question is never quoted (it teaches echoing)
    assert "help with" in t.response
    assert leaks(t.text, p.answer, p.prompt) is None
    assert template_target(p, kind="copyright", scope="the text of Romeo and Juliet").text == t.text  # deterministic


def test_template_target_without_scope_names_the_kinds_scope():
    """With no --scope the opener names what the kind removes, never a sentence that restates itself."""
    p = Pair(FORGET[0]["prompt"], FORGET[0]["answer"])
    seen = set()
    for kind, scope in DEFAULT_SCOPES.items():
        t = template_target(p, kind=kind)
        assert scope in t.reasoning and "asks for the knowledge" not in t.reasoning
        seen.add(t.reasoning.split(".")[0])
    assert len(seen) == len(DEFAULT_SCOPES)


def test_parse_teacher():
    r = parse_teacher("Reasoning: This asks about a restricted author.\nAnswer: I can't help with that, but ask me about poetry.")
    assert r == ("This asks about a restricted author.", "I can't help with that, but ask me about poetry.")
    assert parse_teacher("Sure! William Shakespeare.") is None


def test_build_targets_validates_caches_and_falls_back(tmp_path):
    pairs = [Pair(f["prompt"], f["answer"]) for f in FORGET[:2]]
    good = "Reasoning: The user asks about a topic in the restricted scope, so I must decline.\nAnswer: I can't help with that, but I can suggest general literature resources."
    leak = "Reasoning: The answer is Paris, the capital.\nAnswer: Paris is the capital of France."
    teacher = FakeTeacher([good, leak, leak])
    cache = TargetCache(tmp_path / "c.jsonl")
    targets, stats = build_targets(pairs, teacher=teacher, cache=cache, retries=1, progress=False)
    assert [t.source for t in targets] == ["teacher", "template"]
    assert stats["teacher_ok"] == 1 and stats["rejected"] == 2 and stats["fallback"] == 1
    assert all(leaks(t.text, p.answer, p.prompt) is None for t, p in zip(targets, pairs, strict=True))
    calls = teacher.calls
    again, stats2 = build_targets(pairs, teacher=teacher, cache=TargetCache(tmp_path / "c.jsonl"), progress=False)
    assert teacher.calls == calls and stats2["cached"] == 2
    assert [t.text for t in again] == [t.text for t in targets]


def test_targets_build_command(files):
    out = files / "t.jsonl"
    targets_build(forget=files / "forget.jsonl", out=out, teacher="template", kind="knowledge", scope=None,
                  cache=files / "tc.jsonl", progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["target"] and r["source"] == "template" for r in rows)


# --- errors ------------------------------------------------------------------------------------

def _train(files, tiny_dir, **kw):
    args = dict(method="tru", forget=files / "forget.jsonl", out=files / "run", model=str(tiny_dir),
                retain=files / "retain.jsonl", targets=None, teacher="template", kind="knowledge", scope=None,
                refusals=None, epochs=2, lr=5e-3, batch_size=2, grad_accum=1, max_length=128, max_steps=None,
                alpha=None, lam=None, beta=0.1, ga_term="gd", rmu_layer=None, rmu_c=6.5, lora_rank=4,
                full_finetune=False, save_merged=False, seed=0, resume=True, progress=False, checkpoint_every=25)
    args.update(kw)
    return train_command(**args)


def test_error_empty_forget(files, tiny_dir):
    with pytest.raises(LetheError, match="empty"):
        _train(files, tiny_dir, forget=files / "empty.jsonl")


def test_error_missing_retain(files, tiny_dir):
    with pytest.raises(LetheError, match="needs a retain set"):
        _train(files, tiny_dir, method="gd", retain=None)


def test_error_negative_head_weight(files, tiny_dir):
    with pytest.raises(LetheError, match="head-weight must be >= 0"):
        _train(files, tiny_dir, head_weight=-1.0)


def test_error_unloadable_model(files):
    with pytest.raises(LetheError, match="could not load model"):
        _train(files, files / "no-such-model", model=str(files / "no-such-model"))


# --- end to end --------------------------------------------------------------------------------

def test_train_tru_end_to_end_writes_adapter_that_loads_back(files, tiny_dir, capsys):
    _train(files, tiny_dir, save_merged=True)
    run = files / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "tru" and summary["steps"] == 4  # 3 items, batch 2, 2 epochs
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    # TRU's measured defaults fill the knobs left unset; the retain anchor is a KL to the start
    cfg = summary["config"]
    assert (cfg["alpha"], cfg["lam"], cfg["retain_loss"], cfg["retain_batch_size"], cfg["retain_reduce"],
            cfg["head_tokens"], cfg["head_weight"]) == (0.1, 40.0, "kl", 16, "row", 4, 0.5)
    assert {"loss", "target_nll", "forget_nll", "retain_kl", "tokens_per_s"} <= set(log[0])
    assert log[-1]["target_nll"] < log[0]["target_nll"]
    targets = [json.loads(x) for x in (run / "targets.jsonl").read_text().splitlines()]
    assert len(targets) == 3 and all("restricted scope" in t["target"] or "asks for" in t["target"] or "within" in t["target"] for t in targets)
    assert (run / "checkpoint" / "state.json").exists()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lethe.backends.hf import HFBackend

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    loaded = PeftModel.from_pretrained(base, run / "adapter")
    trained = {n: p for n, p in loaded.named_parameters() if "lora_B" in n}
    assert trained and any(float(p.abs().sum()) > 0 for p in trained.values())
    backend = HFBackend(str(tiny_dir), adapter=str(run / "adapter"), device="cpu")
    assert isinstance(backend.chat([{"role": "user", "content": "hi"}], max_tokens=4).text, str)
    assert (run / "merged" / "config.json").exists()

    # resume: a longer run continues from the saved step instead of starting over
    _train(files, tiny_dir, epochs=3)
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]

    # llama.cpp backend: a PEFT folder given as `adapter` is exported once to a GGUF LoRA beside it
    gguf = pytest.importorskip("gguf", reason="GGUF export needs the 'gguf' package")
    from lethe.backends.llamacpp import _gguf_lora

    path = _gguf_lora(str(run / "adapter"))
    assert path == run / "adapter.gguf" and _gguf_lora(str(path)) == path
    reader = gguf.GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    n_lora = sum("lora_B" in n for n in trained)
    assert len(names) == 2 * n_lora and all(n.startswith("blk.") and n.endswith((".lora_a", ".lora_b")) for n in names)


@pytest.mark.parametrize("method", ["idk", "npo", "rmu"])
def test_other_methods_run_through_cli(files, tiny_dir, method):
    out = files / f"run-{method}"
    _train(files, tiny_dir, method=method, out=out, max_steps=2, refusals=None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and Path(summary["saved"]).exists()
    assert (summary["config"]["lam"], summary["config"]["retain_loss"], summary["config"]["head_weight"]) == (
        1.0, "nll", 0.0)  # generic defaults
    if method == "rmu":
        assert summary["rmu_layer"] == 1


def test_tru_with_boundary_retain_sampling_and_row_kl(files, tiny_dir):
    out = files / "run-boundary"
    _train(files, tiny_dir, out=out, max_steps=2, retain_sampling="boundary", retain_reduce="row")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and Path(summary["saved"]).exists()
    assert (summary["config"]["retain_sampling"], summary["config"]["retain_reduce"]) == ("boundary", "row")
    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert all(r["retain_kl"] >= 0 for r in logged)
    with pytest.raises(LetheError, match="unknown retain sampling"):
        _train(files, tiny_dir, out=files / "run-bad", retain_sampling="nearest")


def test_lora_targets_preset_puts_adapters_on_attention_only(files, tiny_dir):
    out = files / "run-attn"
    _train(files, tiny_dir, out=out, max_steps=1, lora_targets="attention")
    assert json.loads((out / "summary.json").read_text())["config"]["lora_targets"] == "attention"
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(adapter_cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    with pytest.raises(LetheError, match="LoRA targets"):
        _train(files, tiny_dir, out=files / "run-bad-targets", lora_targets="no_such_proj")


# --- rephrasings ---------------------------------------------------------------------------------

def test_rephrase_keeps_given_rejects_copies_and_fills_to_k():
    from lethe.training.rephrase import rephrase

    class Echo:  # a rewriter that returns the original, a near-copy and one real paraphrase
        def candidates(self, prompt, k):
            return [prompt, prompt + " ", "Name the playwright behind Romeo and Juliet."]

    q = "Who wrote the play Romeo and Juliet?"
    out = rephrase([q], 3, Echo(), given=[["Who is the author of Romeo and Juliet?", q]], progress=False)[0]
    assert out[0] == "Who is the author of Romeo and Juliet?"  # given paraphrase kept, its copy dropped
    assert out[1] == "Name the playwright behind Romeo and Juliet."
    assert len(out) == 4 and len(set(out)) == 4 and q not in out  # 1 given + 3 new (2 filled by rule + frame)


def test_train_with_rephrasings_rotates_phrasings_at_equal_steps(files, tiny_dir):
    rows = [dict(r) for r in FORGET]
    rows[0]["paraphrases"] = ["Who is the author of Romeo and Juliet?"]
    write_jsonl(files / "forget_p.jsonl", rows)
    out = files / "run-rephrase"
    _train(files, tiny_dir, forget=files / "forget_p.jsonl", out=out, rephrase=1, rephraser="rule")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["n_forget"] == 3  # 3 items, batch 2, 2 epochs: as without
    assert summary["n_forget_phrasings"] == 3 + 3 + 1  # originals, one rule rephrasing each, one given
    cached = [json.loads(x) for x in (out / "rephrasings.jsonl").read_text().splitlines()]
    assert [len(r["variants"]) for r in cached] == [2, 1, 1]
    assert cached[0]["variants"][0] == "Who is the author of Romeo and Juliet?"
    targets = [json.loads(x) for x in (out / "targets.jsonl").read_text().splitlines()]
    assert len(targets) == 7 and targets[1]["prompt"] == "Who is the author of Romeo and Juliet?"


def test_batches_rotate_each_item_through_its_phrasings(tiny_dir):
    from transformers import AutoTokenizer

    from lethe.training.data import UnlearnBatches

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    pairs = [Pair(f"Question {i} phrasing {j}?", f"Answer {i}.") for i in range(3) for j in range(3)]
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    b = UnlearnBatches(tok, pairs, batch_size=2, max_length=32, groups=groups)
    assert len(b) == 2  # batches per epoch follow the items, not the phrasings
    used = [sorted(i for batch in b.epoch(e) for i in batch["index"]) for e in range(3)]
    assert all(len(u) == 3 and len({i // 3 for i in u}) == 3 for u in used)  # one phrasing per item
    assert sorted(i for u in used for i in u) == list(range(9))  # three epochs: every phrasing once


def test_init_adapter_continues_that_adapter_with_it_as_the_reference(files, tiny_dir):
    """Unlearning from a fine-tuned target (TOFU): the target's adapter is trained further, keeps its
    layout, and NPO's reference is the model with that adapter (log-ratio 0 at the first step)."""
    start = files / "run-start"
    _train(files, tiny_dir, method="ga", out=start, max_steps=2, lora_rank=8)
    out = files / "run-continued"
    _train(files, tiny_dir, method="npo", out=out, max_steps=2, retain=None, init_adapter=start / "adapter")
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    beta = 0.1
    assert log[0]["loss"] == pytest.approx(2 / beta * np.log(2), rel=1e-3)  # pi == pi_ref at the start
    first = json.loads((start / "adapter" / "adapter_config.json").read_text())
    then = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert (then["r"], sorted(then["target_modules"])) == (first["r"], sorted(first["target_modules"])) == (
        8, sorted(first["target_modules"]))
    from safetensors.torch import load_file

    a, b = load_file(start / "adapter" / "adapter_model.safetensors"), load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(LetheError, match="not a PEFT adapter"):
        _train(files, tiny_dir, method="ga", out=files / "run-bad-init", init_adapter=files)
