"""CPU real-knowledge unlearning experiment on the embedded default model (issue 4, item 5).

Steps (each writes into RESULTS, a folder outside the repo; the shared data is read by path)::

    python benchmarks/training_experiment.py build --data ../shared/data --results /tmp/lethe-train-exp
    python -m lethe.training.cli train --method tru --forget RESULTS/forget.jsonl \
        --retain RESULTS/retain_train.jsonl --out RESULTS/runs/tru ...
    python benchmarks/training_experiment.py eval --results RESULTS --run base
    python benchmarks/training_experiment.py eval --results RESULTS --run tru
    python benchmarks/training_experiment.py table --results RESULTS

``build`` asks the default model (transformers, dequantised GGUF, greedy) every question of
TOFU ``real_authors`` and ``world_facts``; items it answers correctly are "known". The forget
set is 20 known real-author items with a quoted title; their answers are the model's own
(correct) first sentence. Retain-train = half of the known world facts (own answers);
retain-eval = the other known world facts plus the remaining known real-author items
(neighbours of the forget set). Forget-side attacks are deterministic rewrites: two
paraphrase templates and a Spanish question per title (TOFU-style paraphrases; the data has
no paraphrased question for ``real_authors``).

``eval`` generates greedily (llama.cpp on the GGUF base with the adapter exported as a GGUF
LoRA -- ~10x faster than transformers on CPU; ``--engine hf`` uses transformers) and scores:
forget accuracy (gold answer in the reply), decline rate (refusal phrase and no gold answer),
the same on paraphrases / Spanish, retain accuracy, a stratified MMLU subset (letter
log-probabilities) and a repetition rate (fluency proxy).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import time
from pathlib import Path

REFUSAL = re.compile(
    r"\b(can(?:no|')t|cannot|unable|not able|won't|sorry|declin\w*|no longer|off limits|not (?:allowed|permitted)|"
    r"restricted|don't (?:know|have)|not something I|no puedo|lo siento)\b",
    re.I,
)
TITLE = re.compile(r"['‘\"“]([^'’\"”]{2,80})['’\"”]")


def fold(s: str) -> str:
    from lethe.text import fold as f

    return f(s)


def has_answer(reply: str, gold: str) -> bool:
    g = fold(gold)
    r = fold(reply)
    if g in r:
        return True
    last = g.split()[-1] if g.split() else g
    return len(g.split()) > 1 and len(last) > 3 and re.search(rf"\b{re.escape(last)}\b", r) is not None


def declines(reply: str, gold: str) -> bool:
    return bool(REFUSAL.search(reply)) and not has_answer(reply, gold)


def repetition(reply: str) -> float:
    """Share of repeated word 3-grams (0 = none); > 0.3 reads as degenerate."""
    w = reply.lower().split()
    grams = [tuple(w[i : i + 3]) for i in range(len(w) - 2)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)


# --- model ---------------------------------------------------------------------------------------

class Gen:
    """Greedy generation with the adapter applied: llama.cpp (GGUF base + GGUF LoRA exported
    with :func:`lethe.training.export.export_lora_gguf`, fast) or transformers (``engine="hf"``)."""

    def __init__(self, run: Path | None, engine: str = "llamacpp") -> None:
        from transformers import AutoTokenizer

        from lethe.training.model import ensure_default_hf

        self.engine = engine
        self.tok = AutoTokenizer.from_pretrained(ensure_default_hf())
        if engine == "llamacpp":
            from llama_cpp import Llama

            from lethe.backends.default_model import default_gguf_path

            kw = {}
            if run is not None:
                from lethe.training.export import export_lora_gguf

                kw["lora_path"] = str(export_lora_gguf(run / "adapter", run / "adapter.gguf"))
            self.llm = Llama(model_path=str(default_gguf_path()), n_ctx=2048, n_threads=2, seed=0, verbose=False, **kw)
            return
        import torch

        from lethe.training.model import load_model

        torch.set_num_threads(2)
        self.model = load_model("default").model
        if run is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(run / "adapter"))
        self.model.eval()
        self.tok.padding_side = "left"
        self.torch = torch

    def prompts(self, qs: list[str]) -> list[str]:
        return [self.tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in qs]

    def _complete(self, prompt: str, max_new: int) -> str:
        r = self.llm.create_completion(prompt, max_tokens=max_new, temperature=0.0, stop=["<|im_end|>", "<|endoftext|>"])
        return r["choices"][0]["text"]

    def generate(self, qs: list[str], max_new: int, bs: int = 16) -> list[str]:
        if self.engine == "llamacpp":
            return [self._complete(p, max_new).strip() for p in self.prompts(qs)]
        out = []
        for i in range(0, len(qs), bs):
            enc = self.tok(self.prompts(qs[i : i + bs]), return_tensors="pt", padding=True, add_special_tokens=False)
            with self.torch.no_grad():
                ids = self.model.generate(**enc, max_new_tokens=max_new, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
            out += self.tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [o.strip() for o in out]

    def mc_letters(self, qs: list[str], bs: int = 8) -> list[int]:
        """Predicted option 0-3: the most likely of the letters after "The answer is"."""
        prompts = [p + "The answer is" for p in self.prompts(qs)]
        if self.engine == "llamacpp":  # argmax over the logits of " A".." D" after the prefill
            letters = [self.llm.tokenize(f" {x}".encode(), add_bos=False)[0] for x in "ABCD"]
            preds = []
            for p in prompts:
                toks = self.llm.tokenize(p.encode(), add_bos=False, special=True)
                self.llm.reset()
                self.llm.eval(toks)
                row = self.llm.scores[self.llm.n_tokens - 1]
                preds.append(int(max(range(4), key=lambda i: row[letters[i]])))
            return preds
        letters = [self.tok(f" {x}", add_special_tokens=False)["input_ids"][0] for x in "ABCD"]
        preds = []
        for i in range(0, len(prompts), bs):
            enc = self.tok(prompts[i : i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
            with self.torch.no_grad():
                logits = self.model(**enc).logits[:, -1, :]
            preds += logits[:, letters].argmax(-1).tolist()
        return preds


class GuardedGen:
    """The same questions through the DRAGON guard (one ``knowledge`` forget request holding the
    forget prompts, rule rewriter, default config) in front of the base or the trained model
    (llama.cpp with the GGUF LoRA). MMLU letters are read from the underlying model: the guard
    changes only the messages of triggered queries, and a few MMLU items trigger."""

    def __init__(self, gen: Gen, run: Path | None, forget: list[dict], res: Path, args) -> None:
        import shutil

        from lethe import Guard
        from lethe.backends.llamacpp import LlamaCppBackend

        home = res / "guard_home"
        shutil.rmtree(home, ignore_errors=True)
        backend = LlamaCppBackend(n_threads=2, adapter=str(run / "adapter") if run else None)
        backend.llm = gen.llm  # one llama.cpp instance for both paths
        self.guard = Guard.open(home, backend=backend)
        self.guard.forget([r["prompt"] for r in forget], kind="knowledge", rewriter="rule", progress=False)
        self.gen, self.fired = gen, {}

    def generate(self, qs: list[str], max_new: int, bs: int = 16) -> list[str]:
        out = []
        for q in qs:
            r = self.guard.chat([{"role": "user", "content": q}], max_tokens=max_new, temperature=0.0)
            self.fired[q] = r.triggered
            out.append(r.response.strip())
        return out

    def mc_letters(self, qs: list[str], bs: int = 8) -> list[int]:
        return self.gen.mc_letters(qs, bs)

    def trigger_rates(self) -> dict:
        return {"guard_fired": sum(self.fired.values()), "guard_queries": len(self.fired)}


# --- build ---------------------------------------------------------------------------------------

def paraphrases(q: str) -> list[tuple[str, str]]:
    m = TITLE.search(q)
    if not m:
        return []
    t = m.group(1)
    return [("paraphrase", f"Can you tell me who the author of '{t}' is?"),
            ("paraphrase", f"'{t}' was written by which writer?"),
            ("spanish", f"¿Quién escribió '{t}'?")]


def first_sentence(s: str) -> str:
    m = re.match(r"(.+?[.!?])(\s|$)", s.strip(), re.S)
    return (m.group(1) if m else s.strip())[:300]


def cmd_build(args) -> None:
    data, res = Path(args.data), Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    authors = [json.loads(x) for x in (data / "tofu" / "real_authors.jsonl").read_text().splitlines() if x.strip()]
    facts = [json.loads(x) for x in (data / "tofu" / "world_facts.jsonl").read_text().splitlines() if x.strip()]
    cached = res / "probe_replies.jsonl"
    if cached.exists():  # re-split without re-probing
        replies = [json.loads(x)["reply"] for x in cached.read_text().splitlines() if x.strip()]
    else:
        gen = Gen(None, args.engine)
        t0 = time.perf_counter()
        replies = gen.generate([r["question"] for r in authors + facts], max_new=40)
        print(f"probed {len(replies)} questions in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        cached.write_text("".join(json.dumps({"q": r["question"], "gold": r["answer"], "reply": x})
                                                     + "\n" for r, x in zip(authors + facts, replies, strict=True)))
    known_a, known_f = [], []
    for r, reply in zip(authors + facts, replies, strict=True):
        if has_answer(first_sentence(reply), r["answer"]):
            row = {"prompt": r["question"], "answer": first_sentence(reply), "gold": r["answer"]}
            (known_a if r in authors else known_f).append(row)
    rng = random.Random(args.seed)
    with_title = [r for r in known_a if paraphrases(r["prompt"])]
    rng.shuffle(with_title)
    forget = with_title[: args.n_forget]
    rest_a = [r for r in known_a if r not in forget]
    rng.shuffle(known_f)
    # the model knows few authors: top the forget set up with known world facts
    top_up = max(0, args.n_forget - len(forget))
    forget += known_f[:top_up]
    known_f = known_f[top_up:]
    half = len(known_f) // 2
    retain_train, retain_eval_f = known_f[:half], known_f[half:]
    retain_train += benign_retain(res, args)
    attacks = [{"prompt": p, "gold": r["gold"], "attack": kind, "source": r["prompt"]}
               for r in forget for kind, p in paraphrases(r["prompt"])]
    retain_eval = [dict(r, group="world_facts") for r in retain_eval_f] + [dict(r, group="authors_rest") for r in rest_a]

    def dump(name: str, rows: list[dict]) -> None:
        (res / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    dump("forget.jsonl", forget)
    dump("forget_attacks.jsonl", attacks)
    dump("retain_train.jsonl", retain_train)
    dump("retain_eval.jsonl", retain_eval)
    stats = {"known_authors": len(known_a), "of_authors": len(authors), "known_facts": len(known_f),
             "of_facts": len(facts), "forget": len(forget), "attacks": len(attacks), "retain_train": len(retain_train),
             "retain_train_benign": sum(r.get("group") == "benign" for r in retain_train),
             "retain_eval": len(retain_eval)}
    (res / "build.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))


def benign_retain(res: Path, args) -> list[dict]:
    """Self-distilled retain rows: the base model's own answers to ``--benign-retain`` everyday,
    technical and literary questions from the package's benign set (cached). They keep the
    model's general behaviour anchored while it learns to decline the forget set."""
    if args.benign_retain <= 0:
        return []
    from importlib.resources import files

    rows = [json.loads(x) for x in files("lethe.resources").joinpath("benign_queries.jsonl").read_text().splitlines()
            if x.strip()]
    rows = [r for r in rows if r.get("category") != "multilingual"]
    random.Random(args.seed).shuffle(rows)
    qs = [r["prompt"] for r in rows[: args.benign_retain]]
    cached = res / "benign_replies.jsonl"
    have = {}
    if cached.exists():
        have = {d["q"]: d["reply"] for d in map(json.loads, cached.read_text().splitlines()) if d}
    todo = [q for q in qs if q not in have]
    if todo:
        gen = Gen(None, args.engine)
        have.update(zip(todo, gen.generate(todo, max_new=64), strict=True))
        cached.write_text("".join(json.dumps({"q": q, "reply": have[q]}, ensure_ascii=False) + "\n" for q in have))
    return [{"prompt": q, "answer": have[q], "gold": "", "group": "benign"} for q in qs if have[q]]


# --- eval ----------------------------------------------------------------------------------------

def load_jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def mmlu_subset(data: Path, per_subject: int, seed: int) -> list[dict]:
    rows = []
    for f in sorted((data / "mmlu" / "test").glob("*.csv")):
        with f.open() as fh:
            items = list(csv.DictReader(fh))
        rng = random.Random(f"{seed}-{f.stem}")
        for it in rng.sample(items, min(per_subject, len(items))):
            q = it["question"] + "\n" + "\n".join(f"{L}. {it[f'choice{i}']}" for i, L in enumerate("ABCD"))
            rows.append({"q": q + "\nAnswer with the letter of the correct option.", "answer": int(it["answer"]),
                         "subject": f.stem})
    return rows


def cmd_eval(args) -> None:
    res = Path(args.results)
    run = None if args.run == "base" else res / "runs" / args.run
    gen = Gen(run, args.engine)
    if args.guard:
        gen = GuardedGen(gen, run, load_jsonl(res / "forget.jsonl"), res, args)
    forget, attacks = load_jsonl(res / "forget.jsonl"), load_jsonl(res / "forget_attacks.jsonl")
    retain = load_jsonl(res / "retain_eval.jsonl")
    t0 = time.perf_counter()
    f_rep = gen.generate([r["prompt"] for r in forget], args.max_new_forget)
    a_rep = gen.generate([r["prompt"] for r in attacks], args.max_new_forget)
    r_rep = gen.generate([r["prompt"] for r in retain], args.max_new_retain)
    mm = mmlu_subset(Path(args.data), args.mmlu_per_subject, args.seed)
    preds = gen.mc_letters([m["q"] for m in mm])
    name = f"guard+{args.run}" if args.guard else args.run
    out = {"run": name, "eval_time_s": round(time.perf_counter() - t0, 1)}

    def rate(xs):
        return round(sum(xs) / max(len(xs), 1), 3)

    out["forget_acc"] = rate([has_answer(x, r["gold"]) for x, r in zip(f_rep, forget, strict=True)])
    out["forget_decline"] = rate([declines(x, r["gold"]) for x, r in zip(f_rep, forget, strict=True)])
    for kind in ("paraphrase", "spanish"):
        pairs = [(x, r) for x, r in zip(a_rep, attacks, strict=True) if r["attack"] == kind]
        out[f"{kind}_acc"] = rate([has_answer(x, r["gold"]) for x, r in pairs])
        out[f"{kind}_decline"] = rate([declines(x, r["gold"]) for x, r in pairs])
    for group in ("world_facts", "authors_rest"):
        pairs = [(x, r) for x, r in zip(r_rep, retain, strict=True) if r["group"] == group]
        out[f"retain_{group}_acc"] = rate([has_answer(x, r["gold"]) for x, r in pairs])
        out[f"retain_{group}_decline"] = rate([bool(REFUSAL.search(x)) for x, _ in pairs])
    out["retain_acc"] = rate([has_answer(x, r["gold"]) for x, r in zip(r_rep, retain, strict=True)])
    out["mmlu_acc"] = rate([p == m["answer"] for p, m in zip(preds, mm, strict=True)])
    out["mmlu_n"] = len(mm)
    out["repetition_forget"] = round(sum(map(repetition, f_rep)) / len(f_rep), 3)
    out["repetition_retain"] = round(sum(map(repetition, r_rep)) / len(r_rep), 3)
    if run is not None and (run / "summary.json").exists():
        s = json.loads((run / "summary.json").read_text())
        out.update({"train_time_s": s["train_time_s"], "steps": s["steps"], "tokens_per_s": s["tokens_per_s"],
                    "peak_memory_mb": s["peak_memory_mb"]})
    if args.guard:
        out.update(gen.trigger_rates())
    samples = {"forget": [{"q": r["prompt"], "reply": x} for r, x in zip(forget, f_rep, strict=True)],
               "attacks": [{"q": r["prompt"], "reply": x} for r, x in zip(attacks, a_rep, strict=True)],
               "retain": [{"q": r["prompt"], "gold": r["gold"], "reply": x} for r, x in zip(retain, r_rep, strict=True)]}
    (res / "evals").mkdir(exist_ok=True)
    from lethe.evaluation.runner import versions

    config = {k: v for k, v in vars(args).items() if k != "func"}
    (res / "evals" / f"{name}.json").write_text(json.dumps({"config": config, "versions": versions(), "metrics": out,
                                                           "samples": samples}, indent=1, ensure_ascii=False))
    print(json.dumps(out))


def cmd_table(args) -> None:
    res = Path(args.results)
    cols = ["forget_acc", "forget_decline", "paraphrase_acc", "paraphrase_decline", "spanish_acc", "spanish_decline",
            "retain_world_facts_acc", "retain_authors_rest_acc", "retain_acc", "mmlu_acc", "repetition_forget",
            "train_time_s"]
    print("| run | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for f in sorted((res / "evals").glob("*.json")):
        m = json.loads(f.read_text())["metrics"]
        print(f"| {m['run']} | " + " | ".join(str(m.get(c, "")) for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    b.add_argument("--results", required=True)
    b.add_argument("--n-forget", type=int, default=20)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--engine", default="llamacpp", choices=["llamacpp", "hf"])
    b.add_argument("--benign-retain", type=int, default=40,
                   help="add the base model's own answers to N benign questions to retain-train")
    e = sub.add_parser("eval")
    e.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    e.add_argument("--results", required=True)
    e.add_argument("--run", required=True, help="'base' or a folder name under RESULTS/runs")
    e.add_argument("--max-new-forget", type=int, default=64)
    e.add_argument("--max-new-retain", type=int, default=32)
    e.add_argument("--mmlu-per-subject", type=int, default=2)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--engine", default="llamacpp", choices=["llamacpp", "hf"])
    e.add_argument("--guard", action="store_true", help="put the DRAGON guard in front of the model")
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    args = ap.parse_args()
    {"build": cmd_build, "eval": cmd_eval, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
