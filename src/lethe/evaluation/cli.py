"""``lethe eval ...`` and ``lethe report``; mounted by ``lethe.cli.main``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from lethe.cli.options import home_option
from lethe.errors import LetheError

eval_app = typer.Typer(help="Run benchmarks (TOFU, WMDP, MMLU, MUSE, continual) and score generations.",
                       no_args_is_help=True)

MethodOpt = typer.Option("none", "--method", help="Method under test: none | dragon | icul | icul+ | guardrail | "
                         "filter | prompt | trained.")
ModelOpt = typer.Option("default", "--model", help="Model: default (the embedded one), a GGUF path, a hub id "
                        "(--backend hf) or an API model.")
BackendOpt = typer.Option("llamacpp", "--backend", help="Backend: llamacpp | hf | openai.")
AdapterOpt = typer.Option(None, "--adapter", help="Trained adapter (PEFT folder or GGUF LoRA; method 'trained'), "
                          "applied by the chosen backend.", show_default="none")
LimitOpt = typer.Option(None, "--limit", help="Stratified, seeded subsample size.", show_default="all")
AttackOpt = typer.Option(None, "--attack", help="Attack on the queries: none | typos | aim | roleplay | override | "
                         "prefix_injection | grandma | json | developer_mode | long_task | translate | translate_mix | "
                         "translate_llm | paraphrase | homoglyph.", show_default="none")
SeedOpt = typer.Option(0, "--seed", help="Seed of subsampling, rewrites and attacks.")
HomeOpt = home_option()
DataOpt = typer.Option(None, "--data", help="Benchmark folder (shared/data layout), or 'hf' for the hub.",
                       show_default="$LETHE_DATA")
OutOpt = typer.Option(..., "--out", help="Results JSON to write.")
ItemsOpt = typer.Option(True, "--items/--no-items", help="Keep per-item outputs in the results.")
FilterOpt = typer.Option("guard", "--filter", help="Detector of the guardrail/filter methods: guard | embed.")
RewriterOpt = typer.Option("rule", "--rewriter", help="Guard store rewriter: rule (fast) | llm (the paper's).")
NliOpt = typer.Option("heuristic", "--nli", help="Entailment model: heuristic | hub:<model id>.")
RefusalOpt = typer.Option("embedding", "--refusal-classifier", help="Refusal classifier: embedding | hub:<model id>.")
GibOpt = typer.Option("rule", "--gibberish", help="Gibberish classifier: rule | hub:<model id>.")
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible server for --backend openai (vLLM, llama.cpp "
                          "server).", show_default="none")
ConcurrencyOpt = typer.Option(1, "--concurrency", min=1,
                              help="Questions in flight at once against an OpenAI-compatible server.")
# multiple-choice options shared by `eval wmdp` and `eval mmlu`
KshotOpt = typer.Option(0, "--kshot", help="MMLU demonstrations from the dev split.")
FormatOpt = typer.Option("chat", "--format", help="Prompt format: chat (template, 'Answer:' prefill) | raw (lm-eval text).")
ScorerOpt = typer.Option("logprob", "--scorer", help="How an answer is read: logprob | generate | both (reports agreement).")
StoreFormatOpt = typer.Option("mc", "--store-format", help="How the guard stores synthetic questions: mc | question.")
BenignOpt = typer.Option("mmlu-dev", "--benign", help="In-domain benign scorer negatives: mmlu-dev | none.")


def _eval_home(home: str | None, task: str, method: str) -> Path:
    """Where a run's guard lives: ``<home>/eval/<time>-<pid>-<task>-<method>/`` under the Lethe
    home (``--home`` / ``LETHE_HOME`` / ``~/.lethe``, as for every command), so an evaluation never
    adds its benchmark requests to the home's own store. It has the home's configuration: for a method
    that works in context, the home's ``guard.yaml`` and ``policies/`` are copied into it (the guider,
    placement and detector settings under test); otherwise nothing is created."""
    import shutil

    from lethe.evaluation.methods import METHODS

    base = Path(home or os.environ.get("LETHE_HOME") or "~/.lethe").expanduser()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run = base / "eval" / f"{stamp}-{os.getpid()}-{task}-{method.replace('+', 'plus')}"
    if method in METHODS and getattr(METHODS.get(method), "in_context", True):
        if (base / "guard.yaml").is_file():
            run.mkdir(parents=True, exist_ok=True)
            shutil.copy2(base / "guard.yaml", run / "guard.yaml")
        if (base / "policies").is_dir():
            shutil.copytree(base / "policies", run / "policies", dirs_exist_ok=True)
    return run


def _run(fn, out: Path | None, **kw) -> dict:
    from rich.console import Console

    try:
        result = fn(**kw)
    except LetheError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    from lethe.evaluation.runner import write_results

    write_results(result, out)
    _summary(result, out)
    return result


def _summary(result: dict, out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from lethe.evaluation.report import _flatten

    t = Table(title=f"{result['task']} · {result.get('config', {}).get('method', '')}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in _flatten(result.get("metrics", {})).items():
        t.add_row(k, f"{v:.4g}")
    c = Console()
    c.print(t)
    if out:
        c.print(f"results written to {out}")


def _backend(model: str, backend: str, adapter: str | None, seed: int, base_url: str | None = None):
    from lethe.evaluation.runner import open_backend

    return open_backend(model, backend, adapter, base_url=base_url, seed=seed)  # threads: LETHE_THREADS


def _step_adapters(adapters: list[str], method: str, adapter: str | None) -> list[str]:
    """``--step-adapter`` values, checked: a training method's sequence, every path present."""
    from lethe.errors import ConfigError
    from lethe.evaluation.methods import METHODS

    if adapters and (METHODS.get(method).in_context if method in METHODS else True):
        raise ConfigError(f"--step-adapter is a training method's sequence of models; method {method!r} "
                          "takes its requests in context (use --method none)")
    if adapters and adapter:
        raise ConfigError("give either --adapter or --step-adapter")
    for a in adapters:
        if not Path(a).expanduser().exists():
            raise ConfigError(f"--step-adapter not found: {a}")
    return adapters


def _root(data: str | None):
    from lethe.evaluation.data import data_root

    return data_root(data)


def _guarded(fn):
    def wrapper(**kw):
        try:
            return fn(**kw)
        except LetheError as exc:
            from rich.console import Console

            Console(stderr=True).print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    return wrapper


def _mc(task: str, out: Path, method: str, model: str, backend: str, adapter: str | None, seed: int,
        base_url: str | None, data: str | None, home: str | None, **kw) -> None:
    """One multiple-choice run (``eval wmdp`` / ``eval mmlu``): backend, data and home resolved alike."""
    from lethe.evaluation.runner import eval_mc

    _run(_guarded(lambda **k: eval_mc(task, **k)), out, method_name=method,
         backend=_guarded(_backend)(model=model, backend=backend, adapter=adapter, seed=seed, base_url=base_url),
         root=_guarded(_root)(data=data), seed=seed, home=_eval_home(home, task, method), **kw)


@eval_app.command("wmdp")
def wmdp(
    subset: list[str] = typer.Option(["bio"], "--subset", help="WMDP subset: bio | chem | cyber (repeatable)."),
    method: str = MethodOpt, model: str = ModelOpt, backend: str = BackendOpt, adapter: str | None = AdapterOpt,
    limit: int | None = typer.Option(100, "--limit", help="WMDP questions per subset (stratified by answer)."),
    mmlu_limit: int = typer.Option(100, "--mmlu-limit", help="MMLU questions scored on the same run (0: none)."),
    kshot: int = KshotOpt, fmt: str = FormatOpt, scorer: str = ScorerOpt, store_format: str = StoreFormatOpt,
    benign: str = BenignOpt,
    attack: str | None = AttackOpt, seed: int = SeedOpt, home: str | None = HomeOpt, data: str | None = DataOpt,
    filter: str = FilterOpt, rewriter: str = RewriterOpt, items: bool = ItemsOpt, out: Path = OutOpt,
    base_url: str | None = BaseUrlOpt, concurrency: int = ConcurrencyOpt,
    generate: int = typer.Option(0, "--generate", min=0, help="Also answer this many WMDP questions per subset in free text, asked without their choices, and score RQ / refusal / KFR."),
    max_tokens: int = typer.Option(96, "--max-tokens", min=1, help="Most tokens per free-text answer (--generate)."),
) -> None:
    """WMDP ProbAcc (and MMLU on the same method instance)."""
    _mc("wmdp", out, method, model, backend, adapter, seed, base_url, data, home, subsets=subset, limit=limit,
        mmlu_limit=mmlu_limit, concurrency=concurrency, kshot=kshot, fmt=fmt, scorer=scorer, attack_name=attack,
        store_format=store_format, benign=benign, filter_kind=filter, rewriter=rewriter, keep_items=items,
        generate=generate, max_tokens=max_tokens)


@eval_app.command("mmlu")
def mmlu(
    method: str = MethodOpt, model: str = ModelOpt, backend: str = BackendOpt, adapter: str | None = AdapterOpt,
    limit: int | None = typer.Option(500, "--limit", help="Questions (stratified by subject and answer)."),
    subjects: list[str] = typer.Option([], "--subject", help="Restrict to these subjects (repeatable).", show_default="all"),
    kshot: int = KshotOpt, fmt: str = FormatOpt, scorer: str = ScorerOpt, store_format: str = StoreFormatOpt,
    benign: str = BenignOpt,
    attack: str | None = AttackOpt, seed: int = SeedOpt, home: str | None = HomeOpt, data: str | None = DataOpt,
    filter: str = FilterOpt, rewriter: str = RewriterOpt, items: bool = ItemsOpt, out: Path = OutOpt,
    base_url: str | None = BaseUrlOpt, concurrency: int = ConcurrencyOpt,
) -> None:
    """MMLU ProbAcc (with a guard method: the store holds the three WMDP concepts)."""
    _mc("mmlu", out, method, model, backend, adapter, seed, base_url, data, home, limit=limit, mmlu_limit=0,
        concurrency=concurrency, kshot=kshot, fmt=fmt, scorer=scorer, attack_name=attack, store_format=store_format,
        benign=benign, filter_kind=filter, rewriter=rewriter, mmlu_subjects=subjects or None, keep_items=items)


@eval_app.command("tofu")
def tofu(
    method: str = MethodOpt, model: str = ModelOpt, backend: str = BackendOpt, adapter: str | None = AdapterOpt,
    split: str = typer.Option("forget05", "--split", help="TOFU forget split: forget01 | forget05 | forget10."),
    limit: int | None = LimitOpt,
    retain_limit: int | None = typer.Option(None, "--retain-limit", help="Items of retain / real authors / world facts.", show_default="--limit"),
    splits: list[str] = typer.Option(["forget", "retain", "real_authors", "world_facts"], "--part",
                                     help="TOFU parts to run (repeatable)."),
    probs: bool = typer.Option(True, "--probs/--no-probs", help="Answer probabilities and truth ratios."),
    reference: str | None = typer.Option(None, "--reference", help="Forget-quality reference: a results file, or the retain model's adapter (PEFT folder / GGUF LoRA, e.g. `lethe tofu prepare`'s retain), run once and cached.", show_default="none"),
    max_tokens: int = typer.Option(200, "--max-tokens", help="Most tokens per generated answer."),
    attack: str | None = AttackOpt, seed: int = SeedOpt, home: str | None = HomeOpt, data: str | None = DataOpt,
    filter: str = FilterOpt, rewriter: str = RewriterOpt, nli: str = NliOpt, refusal_classifier: str = RefusalOpt,
    gibberish: str = GibOpt, items: bool = ItemsOpt, out: Path = OutOpt,
) -> None:
    """TOFU: ROUGE-L, probability, truth ratio, MU, FQ; DS, KFR/KRR, CS, RQ; detection rates."""
    from lethe.evaluation.runner import eval_tofu, tofu_reference

    root = _guarded(_root)(data=data)
    if reference:
        reference = _guarded(tofu_reference)(reference=reference, model=model, backend_kind=backend, root=root,
                                             forget_split=split, limit=limit, seed=seed, max_tokens=max_tokens)
    _run(_guarded(eval_tofu), out, method_name=method,
         backend=_guarded(_backend)(model=model, backend=backend, adapter=adapter, seed=seed),
         root=root, forget_split=split, limit=limit, retain_limit=retain_limit, seed=seed,
         attack_name=attack, home=_eval_home(home, "tofu", method), probs=probs, splits=splits, filter_kind=filter, rewriter=rewriter,
         reference=reference, comp_opts={"nli": nli, "refusal": refusal_classifier, "gibberish": gibberish},
         keep_items=items, max_tokens=max_tokens)


@eval_app.command("muse")
def muse(
    method: str = MethodOpt, model: str = ModelOpt, backend: str = BackendOpt, adapter: str | None = AdapterOpt,
    corpus: str = typer.Option("news", "--corpus", help="MUSE corpus: news | books."),
    limit: int | None = typer.Option(50, "--limit", help="Items per part."),
    parts: list[str] = typer.Option(["knowmem", "verbmem", "privleak"], "--part", help="MUSE parts to run (repeatable)."),
    attack: str | None = AttackOpt, seed: int = SeedOpt, home: str | None = HomeOpt, data: str | None = DataOpt,
    filter: str = FilterOpt, rewriter: str = RewriterOpt, items: bool = ItemsOpt, out: Path = OutOpt,
) -> None:
    """MUSE KnowMem / VerbMem / PrivLeak (loss-MIA AUC)."""
    from lethe.evaluation.runner import eval_muse

    _run(_guarded(eval_muse), out, method_name=method,
         backend=_guarded(_backend)(model=model, backend=backend, adapter=adapter, seed=seed),
         root=_guarded(_root)(data=data), corpus=corpus, limit=limit, seed=seed, attack_name=attack, home=_eval_home(home, "muse", method),
         filter_kind=filter, rewriter=rewriter, parts=parts, keep_items=items)


@eval_app.command("continual")
def continual(
    method: str = MethodOpt, model: str = ModelOpt, backend: str = BackendOpt, adapter: str | None = AdapterOpt,
    schedule: str = typer.Option("authors", "--schedule", help="Request schedule: authors (one per step) | splits (forget01 -> 05 -> 10)."),
    split: str = typer.Option("forget05", "--split", help="TOFU forget split: forget01 | forget05 | forget10."),
    limit: int | None = typer.Option(5, "--limit", help="Questions per author (stratified, seeded)."),
    retain_limit: int = typer.Option(20, "--retain-limit", help="Retain questions scored after each step."),
    utility_limit: int = typer.Option(10, "--utility-limit", help="Real-author and world-fact questions per step."),
    steps: int | None = typer.Option(None, "--steps", help="Stop after this many steps.", show_default="all"),
    probs: bool = typer.Option(True, "--probs/--no-probs", help="Answer probabilities and truth ratios."),
    step_adapter: list[str] | None = typer.Option(
        None, "--step-adapter", help="A training method's model after each step, in order (repeatable; each "
        "trained from the previous with lethe train --init-adapter); step k is scored on the k-th.",
        show_default="none"),
    seed: int = SeedOpt, home: str | None = HomeOpt, data: str | None = DataOpt, filter: str = FilterOpt,
    rewriter: str = RewriterOpt, out: Path = OutOpt,
) -> None:
    """Continual unlearning: requests arrive step by step; DS/MU trajectory, DDS and DUS."""
    from lethe.evaluation.runner import eval_continual

    steps_given = _guarded(_step_adapters)(adapters=list(step_adapter or []), method=method, adapter=adapter)
    _run(_guarded(eval_continual), out, method_name=method,
         backend=_guarded(_backend)(model=model, backend=backend, adapter=steps_given[0] if steps_given else adapter,
                                    seed=seed),
         root=_guarded(_root)(data=data), schedule=schedule, forget_split=split, per_author=limit,
         retain_limit=retain_limit, utility_limit=utility_limit, seed=seed, home=_eval_home(home, "continual", method), probs=probs,
         filter_kind=filter, rewriter=rewriter, steps=steps, step_adapters=steps_given,
         backend_for=(lambda a: _backend(model=model, backend=backend, adapter=a, seed=seed)) if steps_given else None)


@eval_app.command("score")
def score(
    generations: Path = typer.Option(..., "--generations", help="JSON / JSON Lines of {query, generated_response, ground_truth}."),
    split: str = typer.Option(..., "--split", help="Which split the generations answer: forget | retain."),
    retain_generations: Path | None = typer.Option(None, "--retain-generations", help="Retain generations, for DS.", show_default="none"),
    templates: Path | None = typer.Option(None, "--templates", help="Refusal templates, one a line.", show_default="TOFU's"),
    data: str | None = DataOpt, nli: str = NliOpt, refusal_classifier: str = RefusalOpt, gibberish: str = GibOpt,
    out: Path | None = typer.Option(None, "--out", help="Results JSON to write.", show_default="print only"),
) -> None:
    """Score existing generations: ROUGE-L recall, KFR/KRR, CS, RQ (and DS with --retain-generations)."""
    from lethe.evaluation.runner import score_generations

    _run(_guarded(score_generations), out, path=generations, split=split, root=data,
         retain_path=retain_generations, templates_path=templates,
         comp_opts={"nli": nli, "refusal": refusal_classifier, "gibberish": gibberish})


def report_command(
    results: list[Path] = typer.Argument(..., metavar="RESULTS...", help="Results JSON files of lethe eval."),
    out: Path = typer.Option(Path("report.html"), "--out", help="HTML report to write."),
) -> None:
    """Render results files into one HTML report (table + plots)."""
    from rich.console import Console

    from lethe.evaluation.report import write_report

    try:
        write_report(results, out)
    except LetheError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    Console().print(f"report written to {out}")


def main() -> None:  # pragma: no cover - standalone use: python -m lethe.evaluation.cli
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    app.command("report")(report_command)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()


