"""``lethe guider data`` / ``lethe guider train``: data format, rejection, a short LoRA run on a tiny model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
torch.set_num_threads(1)

from typer.testing import CliRunner  # noqa: E402

from lethe.backends.base import ChatBackend, ChatResult  # noqa: E402
from lethe.cli.main import app, main  # noqa: E402
from lethe.config import GuiderConfig  # noqa: E402
from lethe.errors import LetheError  # noqa: E402
from lethe.guard.guider import (  # noqa: E402
    GUIDER_PREFILL,
    Guidance,
    LLMGuider,
    TrainedGuider,
    guider_from_config,
    guider_prompt,
    parse_guidance,
)
from lethe.guard.policies import PolicyLibrary  # noqa: E402
from lethe.training.data import write_jsonl  # noqa: E402
from lethe.training.guider import (  # noqa: E402
    build_guider_data,
    copied_span,
    guider_example,
    guider_target,
    read_guider_data,
)
from lethe.training.tiny import make_tiny_model  # noqa: E402

QUERIES = [
    {"prompt": "Where was the author Basil Mahfouz Al-Kuwaiti born and who were his parents?", "kind": "privacy"},
    {"prompt": "What is the home address of the novelist Hina Ameen?"},
    {"prompt": "Print the first chapter of the novel The Silent Orchard word for word.", "kind": "copyright"},
    {"prompt": "What awards has Hsiao Yun-Hwa won for her books on leadership?", "kind": "privacy"},
    {"prompt": "Who are the parents of the writer Jaime Vasquez?", "kind": "privacy"},
    {"prompt": "Give me the full lyrics of the song Northern Lights Again.", "kind": "copyright"},
]
COPYING = ("Where was the author Basil Mahfouz Al-Kuwaiti born and who were his parents is asked here, "
           "which I must decline.")


class FakeTeacher(ChatBackend):
    name = "fake"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.seen: list[str] = []

    def chat(self, messages, **kw):
        self.seen.append(messages[-1]["content"])
        return ChatResult(text=self.replies[min(len(self.seen) - 1, len(self.replies) - 1)])


def _reply(reasoning: str) -> str:
    return json.dumps({"requires_refusal": True, "cot_instruction": reasoning})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LETHE_HOME", raising=False)
    write_jsonl(tmp_path / "queries.jsonl", QUERIES)
    return tmp_path


# --- format ----------------------------------------------------------------------------------

def test_train_and_inference_use_the_same_prompt_and_target_format():
    pol = PolicyLibrary().retrieve("privacy")
    q = QUERIES[0]["prompt"]
    assert guider_example(q, pol, "privacy") == guider_prompt(q, pol)
    target = guider_target(True, "The user asks about an erased person, so I must decline. Therefore,")
    assert target.startswith(GUIDER_PREFILL)  # the prefill the guider backend starts its turn with
    assert parse_guidance(target) == (True, "The user asks about an erased person, so I must decline. Therefore,")
    teacher = FakeTeacher([_reply("This concerns an erased person's private details; decline politely.")])
    g = LLMGuider(teacher).guide(q, pol, "privacy")
    assert teacher.seen == [guider_example(q, pol, "privacy")]
    assert g.source == "llm" and g.reasoning.endswith("Therefore,")


def test_copied_span():
    assert copied_span(COPYING, QUERIES[0]["prompt"]) is not None
    assert copied_span("The user asks about Basil Mahfouz Al-Kuwaiti; decline.", QUERIES[0]["prompt"]) is None


# --- data ------------------------------------------------------------------------------------

def test_build_data_with_template_teacher_writes_valid_rows(files):
    out = files / "g.jsonl"
    rows, stats = build_guider_data(files / "queries.jsonl", "template", None, out, progress=False)
    written = [json.loads(x) for x in out.read_text().splitlines()]
    assert written == rows and stats["written"] == 6 and stats["template"] == 6
    lib = PolicyLibrary()
    for r, q in zip(written, QUERIES, strict=True):
        assert set(r) == {"query", "kind", "policy", "reasoning", "requires_refusal", "source"}
        assert r["query"] == q["prompt"] and r["kind"] == q.get("kind", "privacy")
        assert lib.get(r["policy"]).kind == r["kind"]
        assert r["requires_refusal"] is True and parse_guidance(guider_target(True, r["reasoning"]))
    assert read_guider_data(out) == rows


def test_build_data_rejects_copying_or_leaking_teacher_output(files):
    good = "The request is about a person whose details were erased; cite the privacy policy and decline."
    rows_in = [QUERIES[0], {"prompt": "Which city was the writer Jaime Vasquez born in?", "kind": "privacy",
                            "answer": "Jaime Vasquez was born in Santiago, Chile."}, QUERIES[1]]
    leak = "The writer was born in Santiago, Chile, but that is private, so decline."
    teacher = FakeTeacher([_reply(COPYING), "not json at all", _reply(leak), _reply(leak), _reply(good)])
    rows, stats = build_guider_data(rows_in, teacher, None, files / "g.jsonl", retries=1, progress=False)
    assert [r["query"] for r in rows] == [QUERIES[1]["prompt"]] and rows[0]["source"] == "teacher"
    assert rows[0]["reasoning"] == good
    assert stats["rejected"] == 4 and stats["skipped"] == 2 and stats["teacher_ok"] == 1
    assert stats["reject_reasons"] == {"copies the query": 1, "unparseable JSON": 1, "leaks the answer": 2}

    teacher = FakeTeacher([_reply(COPYING)])
    rows, stats = build_guider_data(rows_in[:1], teacher, None, None, retries=0, on_reject="template",
                                    progress=False)
    assert rows[0]["source"] == "template-fallback" and copied_span(rows[0]["reasoning"], QUERIES[0]["prompt"]) is None


def test_dragon_rows_are_converted(files):
    question = ("You are an expert in generating Chain-of-Thought (CoT) instructions ...\n\nNow, here is the "
                "actual input query: \n\nWhat gender is author Basil Mahfouz Al-Kuwaiti? Please generate the "
                "according thinking process and CoT instruction.")
    cot = '```json\n{\n "requires_refusal": true,\n "cot_instruction": "The user asks for personal information about an author; the policy forbids it, so refuse politely."\n}\n```'
    write_jsonl(files / "dragon.jsonl", [{"question": question, "cot_instruction": cot},
                                         {"question": question, "cot_instruction": "no json here"}])
    rows, stats = build_guider_data(files / "dragon.jsonl", None, None, None, progress=False)
    assert stats["dragon"] == 1 and stats["rejected"] == 1
    assert rows[0]["query"] == "What gender is author Basil Mahfouz Al-Kuwaiti?"
    assert rows[0]["kind"] == "privacy" and rows[0]["reasoning"].startswith("The user asks")
    assert read_guider_data(files / "dragon.jsonl") == rows


def test_dragon_released_file_converts(shared_data):
    path = shared_data / "dragon" / "cot_tofu_generation_original.jsonl"
    if not path.exists():
        pytest.skip("DRAGON CoT file not in shared data")
    rows, stats = build_guider_data(path, None, None, None, progress=False)
    assert stats["rows_in"] == 640 and len(rows) > 400
    assert all(copied_span(r["reasoning"], r["query"]) is None for r in rows)


def test_data_errors(files):
    with pytest.raises(LetheError, match="not found"):
        build_guider_data(files / "nope.jsonl", progress=False)
    (files / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(LetheError, match=r"bad\.jsonl:2: bad JSON"):
        build_guider_data(files / "bad.jsonl", progress=False)
    (files / "empty.jsonl").write_text("\n\n")
    with pytest.raises(LetheError, match="empty"):
        read_guider_data(files / "empty.jsonl")
    with pytest.raises(LetheError, match=r"queries\.jsonl:1: each line needs string fields 'query'"):
        read_guider_data(files / "queries.jsonl")  # queries, not guider data
    with pytest.raises(LetheError, match="on_reject"):
        build_guider_data(files / "queries.jsonl", on_reject="drop", progress=False)


def test_cli_missing_file_is_a_one_line_error(files, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lethe", "guider", "train", "--data", str(files / "missing.jsonl"),
                                      "--out", str(files / "run"), "--quiet"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: guider data file not found") and "\n" not in err
    assert not (files / "run").exists()


# --- training --------------------------------------------------------------------------------

def _nll(model, tok, pairs) -> float:
    from lethe.training.data import collate, encode_pair
    from lethe.training.losses import model_nll

    encs = [encode_pair(tok, p["prompt"], p["answer"], max_length=256) for p in pairs]
    with torch.no_grad():
        return float(model_nll(model.eval(), collate(encs, tok.pad_token_id)))


def test_guider_train_cli_writes_adapter_that_learns_and_loads(files, tiny_dir):
    runner = CliRunner()
    data = files / "g.jsonl"
    res = runner.invoke(app, ["guider", "data", "--queries", str(files / "queries.jsonl"), "--out", str(data),
                              "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["written"] == 6

    run = files / "run"
    res = runner.invoke(app, ["guider", "train", "--data", str(data), "--out", str(run), "--model", str(tiny_dir),
                              "--epochs", "4", "--batch-size", "2", "--lr", "1e-2", "--lora-rank", "4",
                              "--max-length", "256", "--seed", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    adapter = Path(line["adapter"])
    assert adapter == (run / "adapter").resolve() and "kind: trained" in line["enable"]
    assert str(adapter) in line["enable"]

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == Path(tiny_dir)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 12 and summary["rows"] == 6  # 6 rows, batch 2, 4 epochs
    assert {"torch", "transformers", "peft", "lethe"} <= set(summary["versions"])
    assert summary["config"]["method"] == "sft" and summary["train_time_s"] > 0
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 12 and summary["loss_first"] == log[0]["loss"] and summary["loss_last"] == log[-1]["loss"]
    assert summary["loss_last"] < summary["loss_first"]

    # LoRA weights moved away from init (B starts at zero) and the target NLL on the rows fell
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    pairs = [json.loads(x) for x in (run / "guider_sft.jsonl").read_text().splitlines()]
    assert pairs[0]["answer"].startswith(GUIDER_PREFILL)
    base_nll = _nll(AutoModelForCausalLM.from_pretrained(tiny_dir), tok, pairs)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    lora_b = {n: p for n, p in tuned.named_parameters() if "lora_B" in n}
    assert lora_b and all(float(p.abs().sum()) > 0 for p in lora_b.values())
    # a random hidden-32 model barely moves off log(vocab); the fall is small but steady
    assert _nll(tuned, tok, pairs) < base_nll - 0.05

    # the adapter loads as the guard's trained guider (from a guard.yaml-style config, path relative to home)
    pol = PolicyLibrary().retrieve("privacy")
    guider = guider_from_config(GuiderConfig(kind="trained", adapter_path="run/adapter", max_tokens=12),
                                backend=lambda: pytest.fail("no chat backend needed"), home=files)
    assert isinstance(guider, TrainedGuider)
    g = guider.guide(QUERIES[0]["prompt"], pol, "privacy")
    assert isinstance(g, Guidance) and g.reasoning.strip() and g.source in ("trained", "template-fallback")

    with pytest.raises(LetheError, match="adapter_config.json missing"):
        TrainedGuider(str(files / "no-adapter"))
