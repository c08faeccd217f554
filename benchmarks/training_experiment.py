"""CPU real-knowledge unlearning experiment on the embedded default model (issue 4, item 5).

Steps (each writes into RESULTS, a folder outside the repo; the shared data is read by path)::

    python benchmarks/training_experiment.py build --data ../shared/data --results /tmp/lethe-train-exp
    python -m lethe.training.cli train --method tru --forget RESULTS/forget.jsonl \
        --retain RESULTS/retain_train.jsonl --out RESULTS/runs/tru ...
    python benchmarks/training_experiment.py eval --results RESULTS --run base
    python benchmarks/training_experiment.py eval --results RESULTS --run tru
    python benchmarks/training_experiment.py table --results RESULTS

``build`` asks the default model (llama.cpp, greedy) every "who wrote <title>?" question of
TOFU ``real_authors`` and of ``benchmarks/data/literature_probe.jsonl`` (ours), and every TOFU
``world_facts`` question; items it answers correctly are "known". The forget scope is one
coherent topic -- who wrote well-known literary works -- so a model can learn its boundary:
the forget set is 20 known authorship items (answers: the model's own correct first
sentence), the other known authorship items are held-out in-scope questions (does forgetting
generalise?). Retain-train = half of the known world facts (own answers) + 40 self-distilled
benign answers; retain-eval = the other known world facts plus the facts of
``benchmarks/data/retain_probe.jsonl`` (general knowledge and scope neighbours, never trained
on), each kept only if the base answers it correctly under the strict fact matcher, so the
base scores 1.00 and a run's retain accuracy is the share of the base's knowledge it kept.
Forget-side attacks are
deterministic rewrites: two paraphrase templates and a Spanish question per title
(TOFU-style paraphrases; the data has no paraphrased question for ``real_authors``).

``eval`` generates greedily (llama.cpp on the GGUF base with the adapter exported as a GGUF
LoRA -- ~10x faster than transformers on CPU; ``--engine hf`` uses transformers) and scores:
forget accuracy (gold answer in the reply), decline rate (refusal phrase and no gold answer),
the same on paraphrases / Spanish, retain accuracy (``fact_answer``), a stratified MMLU sample scored by the
evaluation harness (zero-shot letter log-likelihood, lm-eval format) and a repetition rate
(fluency proxy).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from lethe.evaluation.metrics.facts import fact_answer, has_answer, repetition
from lethe.evaluation.metrics.refusal import RefusalDetector, has_refusal_phrase
from lethe.text import fold

TITLE = re.compile(r"['‘\"“]([^'’\"”]{2,80})['’\"”]")
__all__ = ["fact_answer", "fold", "has_answer", "repetition"]


def accepted(row: dict) -> list[str]:
    return row.get("accept") or [row["gold"]]


# --- model ---------------------------------------------------------------------------------------

class Gen:
    """Greedy generation with the adapter applied, through Lethe's own backends: llama.cpp (GGUF
    base + the PEFT adapter exported once as a GGUF LoRA -- ~10x faster than transformers on CPU)
    or transformers (``engine="hf"``, the dequantised default + the PEFT adapter)."""

    def __init__(self, run: Path | None, engine: str = "llamacpp") -> None:
        adapter = str(run / "adapter") if run is not None else None
        if engine == "llamacpp":
            from lethe.backends.llamacpp import LlamaCppBackend

            self.backend = LlamaCppBackend(n_threads=2, adapter=adapter)
        else:
            from lethe.backends.hf import HFBackend
            from lethe.training.model import ensure_default_hf

            self.backend = HFBackend(str(ensure_default_hf()), adapter=adapter)

    def generate(self, qs: list[str], max_new: int) -> list[str]:
        return [self.backend.chat([{"role": "user", "content": q}], max_tokens=max_new, temperature=0.0).text.strip()
                for q in qs]

    def mmlu(self, items: list[dict]) -> list[dict]:
        """The harness's zero-shot MMLU ProbAcc records (letter log-likelihood, lm-eval format)."""
        from lethe.evaluation.methods import create_method
        from lethe.evaluation.runner import run_mc_items

        return run_mc_items(items, create_method("none", self.backend), self.backend, is_forget=False,
                            desc="mmlu", offset=100000)


class GuardedGen:
    """The same questions through the DRAGON guard -- the harness's ``dragon`` method with one
    ``knowledge`` forget request holding the forget prompts (rule rewriter, default config) --
    in front of the base or the trained model (llama.cpp with the GGUF LoRA). MMLU goes through
    the guard too: a triggered item is scored in the guarded context."""

    def __init__(self, gen: Gen, forget: list[dict], res: Path) -> None:
        import shutil

        from lethe.evaluation.methods import ForgetTarget, create_method

        home = res / "guard_home"
        shutil.rmtree(home, ignore_errors=True)
        self.backend = gen.backend
        self.method = create_method("dragon", gen.backend, home=str(home), rewriter="rule")
        self.method.setup([ForgetTarget(kind="knowledge", subject="the forget set",
                                        prompts=[r["prompt"] for r in forget])])
        self.fired: dict[str, bool] = {}

    def generate(self, qs: list[str], max_new: int) -> list[str]:
        out = []
        for q in qs:
            text, plan = self.method.respond([{"role": "user", "content": q}], max_tokens=max_new)
            self.fired[q] = plan.triggered
            out.append(text)
        return out

    def mmlu(self, items: list[dict]) -> list[dict]:
        from lethe.evaluation.runner import run_mc_items

        return run_mc_items(items, self.method, self.backend, is_forget=False, desc="mmlu [guard]", offset=100000)

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


# Train-only rephrasings for ``augment``: none of them is an evaluation template above.
TRAIN_REPHRASINGS = ("Who is the writer of '{t}'?", "Name the person who wrote '{t}'.")


def rephrasings(q: str) -> list[str]:
    m = re.search(r"'(.+)'", q)  # greedy: keeps apostrophes inside the title
    return [tpl.format(t=m.group(1)) for tpl in TRAIN_REPHRASINGS] if m else []


def first_sentence(s: str) -> str:
    m = re.match(r"(.+?[.!?])(\s|$)", s.strip(), re.S)
    return (m.group(1) if m else s.strip())[:300]


def base_replies(res: Path, cache: str, qs: list[str], engine: str, max_new: int) -> dict[str, str]:
    """The base model's greedy replies to ``qs``, cached in RESULTS/``cache`` (one {q, reply} a line),
    so a re-build re-splits without re-probing."""
    cached = res / cache
    have = {d["q"]: d["reply"] for d in load_jsonl(cached)} if cached.exists() else {}
    todo = list(dict.fromkeys(q for q in qs if q not in have))
    if todo:
        t0 = time.perf_counter()
        have.update(zip(todo, Gen(None, engine).generate(todo, max_new=max_new), strict=True))
        print(f"probed {len(todo)} questions in {time.perf_counter() - t0:.0f}s ({cache})", file=sys.stderr)
        cached.write_text("".join(json.dumps({"q": q, "reply": x}, ensure_ascii=False) + "\n" for q, x in have.items()))
    return have


def cmd_build(args) -> None:
    data, res = Path(args.data), Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    authors = [json.loads(x) for x in (data / "tofu" / "real_authors.jsonl").read_text().splitlines() if x.strip()]
    probe = [json.loads(x) for x in Path(args.probe).read_text().splitlines() if x.strip()] if args.probe else []
    titles = {m.group(1).lower() for r in authors if (m := TITLE.search(r["question"]))}
    authors += [r for r in probe if (m := TITLE.search(r["question"])) and m.group(1).lower() not in titles]
    facts = [json.loads(x) for x in (data / "tofu" / "world_facts.jsonl").read_text().splitlines() if x.strip()]
    have = base_replies(res, "probe_replies.jsonl", [r["question"] for r in authors + facts], args.engine, 40)
    known_a, known_f = [], []
    for r in authors + facts:
        reply = have[r["question"]]
        if has_answer(first_sentence(reply), r["answer"]):
            row = {"prompt": r["question"], "answer": first_sentence(reply), "gold": r["answer"]}
            (known_a if r in authors else known_f).append(row)
    rng = random.Random(args.seed)
    with_title = [r for r in known_a if paraphrases(r["prompt"])]
    rng.shuffle(with_title)
    if len(with_title) < args.n_forget:
        sys.exit(f"the model knows only {len(with_title)} literary-authorship items; lower --n-forget")
    # forget scope: who wrote well-known literary works. The known items beyond the forget set
    # are held-out in-scope questions (does forgetting generalise?); world facts are the retain side.
    forget, heldout = with_title[: args.n_forget], with_title[args.n_forget :]
    rng.shuffle(known_f)
    half = len(known_f) // 2
    retain_train, retain_eval_f = known_f[:half], known_f[half:]
    retain_train += benign_retain(res, args)
    attacks = [{"prompt": p, "gold": r["gold"], "attack": kind, "source": r["prompt"]}
               for r in forget for kind, p in paraphrases(r["prompt"])]
    attacks += [{"prompt": r["prompt"], "gold": r["gold"], "attack": "heldout", "source": r["prompt"]} for r in heldout]
    # The split above predates the strict fact matcher and is kept (earlier runs trained on it);
    # retain-eval keeps the world facts the base answers correctly under the strict matcher, plus
    # the facts of --retain-probe (ours: general knowledge and scope neighbours) it answers correctly.
    retain_eval = [dict(r, group="world_facts", accept=[r["gold"]]) for r in retain_eval_f
                   if fact_answer(first_sentence(have[r["prompt"]]), [r["gold"]], r["prompt"])]
    retain_eval += retain_probe(res, args)

    def dump(name: str, rows: list[dict]) -> None:
        (res / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    dump("forget.jsonl", forget)
    dump("forget_attacks.jsonl", attacks)
    dump("retain_train.jsonl", retain_train)
    dump("retain_eval.jsonl", retain_eval)
    stats = {"known_authors": len(known_a), "of_authors": len(authors), "known_facts": len(known_f),
             "of_facts": len(facts), "forget": len(forget), "attacks": len(attacks), "retain_train": len(retain_train),
             "retain_train_benign": sum(r.get("group") == "benign" for r in retain_train),
             "heldout_in_scope": len(heldout), "retain_eval": len(retain_eval),
             "retain_eval_groups": {g: sum(r["group"] == g for r in retain_eval)
                                    for g in ("world_facts", "general", "neighbour")}}
    (res / "build.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))


def retain_probe(res: Path, args) -> list[dict]:
    """Retain-eval facts from ``--retain-probe`` that the base model answers correctly (strict
    matcher on its greedy first sentence; replies cached in RESULTS/retain_probe_replies.jsonl).
    Never trained on: ``general`` knowledge (geography, science, history, everyday) and scope
    ``neighbour`` facts (who painted / composed / invented X; facts about books that are not
    their authorship) that a model which over-learns "decline who-made-X" would lose."""
    if not args.retain_probe:
        return []
    rows = [dict(r, accept=r.get("accept") or [r["answer"]]) for r in load_jsonl(Path(args.retain_probe))]
    have = base_replies(res, "retain_probe_replies.jsonl", [r["question"] for r in rows], args.engine, 40)
    return [{"prompt": r["question"], "answer": first_sentence(have[r["question"]]), "gold": r["answer"],
             "accept": r["accept"], "group": r.get("group", "general")}
            for r in rows if fact_answer(first_sentence(have[r["question"]]), r["accept"], r["question"])]


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
    have = base_replies(res, "benign_replies.jsonl", qs, args.engine, 64)
    return [{"prompt": q, "answer": have[q], "gold": "", "group": "benign"} for q in qs if have[q]]


# --- eval ----------------------------------------------------------------------------------------

def load_jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def rate(xs) -> float:
    xs = list(xs)
    return round(sum(xs) / max(len(xs), 1), 3)


_DETECTORS: dict[str, RefusalDetector] = {}


def refusal_flags(replies: list[str], data: Path) -> list[bool]:
    """The package's refusal definition (phrase or classifier, with TOFU's templates as extra refusals)."""
    if str(data) not in _DETECTORS:
        from lethe.evaluation.data import load_refusal_templates

        _DETECTORS[str(data)] = RefusalDetector(load_refusal_templates(data))
    return _DETECTORS[str(data)].flags(replies)


def reply_metrics(f_rep, a_rep, r_rep, forget, attacks, retain, data: Path) -> dict:
    """Accuracy (gold in the reply), decline (a refusal without the gold answer) and repetition."""
    ref = refusal_flags(list(f_rep) + list(a_rep) + list(r_rep), data)
    f_ref, a_ref, r_ref = ref[: len(f_rep)], ref[len(f_rep) : len(f_rep) + len(a_rep)], ref[len(f_rep) + len(a_rep) :]
    out = {"forget_acc": rate(has_answer(x, r["gold"]) for x, r in zip(f_rep, forget, strict=True)),
           "forget_decline": rate(f and not has_answer(x, r["gold"])
                                  for x, r, f in zip(f_rep, forget, f_ref, strict=True))}
    for kind in ("paraphrase", "spanish", "heldout"):
        trip = [(x, r, f) for x, r, f in zip(a_rep, attacks, a_ref, strict=True) if r["attack"] == kind]
        out[f"{kind}_acc"] = rate(has_answer(x, r["gold"]) for x, r, _ in trip)
        out[f"{kind}_decline"] = rate(f and not has_answer(x, r["gold"]) for x, r, f in trip)
    hits = [fact_answer(x, accepted(r), r["prompt"]) for x, r in zip(r_rep, retain, strict=True)]
    out["retain_acc"] = rate(hits)
    out["retain_n"] = len(retain)
    out["retain_decline"] = rate(r_ref)
    for g in ("world_facts", "general", "neighbour"):
        sel = [h for h, r in zip(hits, retain, strict=True) if r.get("group", "world_facts") == g]
        if sel:
            out[f"retain_{g}_acc"] = rate(sel)
    out["repetition_forget"] = round(sum(map(repetition, f_rep)) / len(f_rep), 3)
    out["repetition_retain"] = round(sum(map(repetition, r_rep)) / len(r_rep), 3)
    return out


def cmd_rescore(args) -> None:
    """Recompute the reply metrics of every stored eval from its saved replies (no generation)."""
    res = Path(args.results)
    forget, attacks = load_jsonl(res / "forget.jsonl"), load_jsonl(res / "forget_attacks.jsonl")
    retain = load_jsonl(res / "retain_eval.jsonl")
    for f in sorted((res / "evals").glob("*.json")):
        if getattr(args, "only", None) and f.stem != args.only:
            continue
        d = json.loads(f.read_text())
        sm = d["samples"]
        stored = {x["q"]: x["reply"] for x in sm["retain"]}
        missing = [r["prompt"] for r in retain if r["prompt"] not in stored]
        if missing:
            print(f"{f.stem}: skipped, no reply stored for {len(missing)} retain questions "
                  f"(run: eval --run {f.stem.removeprefix('guard+')} --retain-only"
                  f"{' --guard' if f.stem.startswith('guard+') else ''})", file=sys.stderr)
            continue
        m = d["metrics"]
        for k in [k for k in m if k.startswith("retain_") and k != "retain_eval_time_s"]:
            del m[k]
        m.update(reply_metrics([x["reply"] for x in sm["forget"]], [x["reply"] for x in sm["attacks"]],
                               [stored[r["prompt"]] for r in retain], forget, attacks, retain, Path(args.data)))
        f.write_text(json.dumps(d, indent=1, ensure_ascii=False))
        print(f.stem, json.dumps({k: m[k] for k in ("forget_decline", "paraphrase_decline", "retain_acc")}))


def cmd_eval(args) -> None:
    res = Path(args.results)
    run = None if args.run == "base" else res / "runs" / args.run
    gen = Gen(run, args.engine)
    if args.guard:
        gen = GuardedGen(gen, load_jsonl(res / "forget.jsonl"), res)
    forget, attacks = load_jsonl(res / "forget.jsonl"), load_jsonl(res / "forget_attacks.jsonl")
    retain = load_jsonl(res / "retain_eval.jsonl")
    name = f"guard+{args.run}" if args.guard else args.run
    t0 = time.perf_counter()
    if args.retain_only:  # new retain questions for a stored eval: regenerate the retain replies only
        path = res / "evals" / f"{name}.json"
        if not path.exists():
            sys.exit(f"--retain-only needs a stored eval: {path} does not exist")
        d = json.loads(path.read_text())
        r_rep = gen.generate([r["prompt"] for r in retain], args.max_new_retain)
        d["samples"]["retain"] = [{"q": r["prompt"], "gold": r["gold"], "reply": x}
                                  for r, x in zip(retain, r_rep, strict=True)]
        d["metrics"]["retain_eval_time_s"] = round(time.perf_counter() - t0, 1)
        path.write_text(json.dumps(d, indent=1, ensure_ascii=False))
        cmd_rescore(argparse.Namespace(results=args.results, data=args.data, only=name))
        return
    f_rep = gen.generate([r["prompt"] for r in forget], args.max_new_forget)
    a_rep = gen.generate([r["prompt"] for r in attacks], args.max_new_forget)
    r_rep = gen.generate([r["prompt"] for r in retain], args.max_new_retain)
    from lethe.evaluation.runner import load_mmlu_sample

    mm = gen.mmlu(load_mmlu_sample(Path(args.data), args.mmlu_limit, args.seed))
    out = {"run": name, "eval_time_s": round(time.perf_counter() - t0, 1)}

    out.update(reply_metrics(f_rep, a_rep, r_rep, forget, attacks, retain, Path(args.data)))
    out["mmlu_acc"] = rate([m["correct"] for m in mm])
    out["mmlu_n"] = len(mm)
    out["mmlu_trigger_rate"] = rate([m["triggered"] for m in mm])
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


def cmd_distill(args) -> None:
    """RESULTS/OUT = retain_train.jsonl + the base model's own first-sentence answers to ``--questions``
    (refusals dropped): a larger self-distilled retain anchor, e.g. scope neighbours and general facts."""
    res = Path(args.results)
    rows = load_jsonl(Path(args.questions))
    have = base_replies(res, "retain_train_extra_replies.jsonl", [r["prompt"] for r in rows], args.engine, 40)
    replies = [have[r["prompt"]] for r in rows]
    extra = [{"prompt": r["prompt"], "answer": first_sentence(x), "gold": "",
              "group": f"{r.get('group', 'general')}_selfdistilled"}
             for r, x in zip(rows, replies, strict=True) if x.strip() and not has_refusal_phrase(first_sentence(x))]
    base = load_jsonl(res / "retain_train.jsonl")
    (res / args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in base + extra))
    print(json.dumps({"retain_train": len(base), "added": len(extra), "refusals_dropped": len(rows) - len(extra),
                      "out": str(res / args.out)}))


def cmd_augment(args) -> None:
    """RESULTS/forget_aug.jsonl = each forget item + its train-only rephrasings (same answer): the TRU
    spec's scope is every input expressing the knowledge unit, so the targets are taught on several
    phrasings. The evaluation's paraphrase and Spanish templates stay unseen."""
    res = Path(args.results)
    rows = load_jsonl(res / "forget.jsonl")
    evals = {p for r in rows for _, p in paraphrases(r["prompt"])}
    out = []
    for r in rows:
        out.append(r)
        out += [{**r, "prompt": q, "source_prompt": r["prompt"]} for q in rephrasings(r["prompt"])]
    assert not evals & {r["prompt"] for r in out}, "a training rephrasing equals an evaluation attack"
    (res / args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    print(json.dumps({"forget": len(rows), "rows": len(out), "out": str(res / args.out)}))


def cmd_table(args) -> None:
    res = Path(args.results)
    cols = ["forget_acc", "forget_decline", "paraphrase_acc", "paraphrase_decline", "spanish_acc", "spanish_decline",
            "heldout_acc", "heldout_decline", "retain_acc", "retain_world_facts_acc", "retain_general_acc",
            "retain_neighbour_acc", "retain_decline", "mmlu_acc",
            "repetition_forget", "train_time_s"]
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
    b.add_argument("--probe", default=str(Path(__file__).resolve().parent / "data" / "literature_probe.jsonl"),
                   help="extra 'who wrote <title>?' questions (JSONL question/answer) beside TOFU real_authors")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--engine", default="llamacpp", choices=["llamacpp", "hf"])
    b.add_argument("--retain-probe", default=str(Path(__file__).resolve().parent / "data" / "retain_probe.jsonl"),
                   help="extra retain-eval facts (question, answer, accept, group); '' for none")
    b.add_argument("--benign-retain", type=int, default=40,
                   help="add the base model's own answers to N benign questions to retain-train")
    e = sub.add_parser("eval")
    e.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    e.add_argument("--results", required=True)
    e.add_argument("--run", required=True, help="'base' or a folder name under RESULTS/runs")
    e.add_argument("--max-new-forget", type=int, default=64)
    e.add_argument("--max-new-retain", type=int, default=32)
    e.add_argument("--mmlu-limit", type=int, default=114, help="stratified MMLU test sample (subject x answer)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--engine", default="llamacpp", choices=["llamacpp", "hf"])
    e.add_argument("--guard", action="store_true", help="put the DRAGON guard in front of the model")
    e.add_argument("--retain-only", action="store_true",
                   help="regenerate only the retain replies of a stored eval (after the retain set grew)")
    r = sub.add_parser("rescore", help="recompute reply metrics of stored evals (after a scorer change)")
    r.add_argument("--results", required=True)
    r.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    d = sub.add_parser("distill", help="retain-train + self-distilled answers to extra questions")
    d.add_argument("--results", required=True)
    d.add_argument("--questions", default=str(Path(__file__).resolve().parent / "data" / "retain_train_extra.jsonl"))
    d.add_argument("--out", default="retain_train_v2.jsonl")
    d.add_argument("--engine", default="llamacpp", choices=["llamacpp", "hf"])
    a = sub.add_parser("augment", help="forget items + train-only rephrasings (RESULTS/forget_aug.jsonl)")
    a.add_argument("--results", required=True)
    a.add_argument("--out", default="forget_aug.jsonl")
    t = sub.add_parser("table")
    t.add_argument("--results", required=True)
    args = ap.parse_args()
    {"build": cmd_build, "eval": cmd_eval, "rescore": cmd_rescore, "distill": cmd_distill, "augment": cmd_augment,
     "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    main()
