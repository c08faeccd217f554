"""``lethe train``, ``lethe targets build`` and ``lethe guider data|train`` (mounted by ``lethe.cli.main``)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lethe.cli.options import HomeOpt  # --home DIR / LETHE_HOME; its policies/ folder adds custom policies

targets_app = typer.Typer(help="Reasoning targets for TRU and the guider.", no_args_is_help=True)
guider_app = typer.Typer(help="Build data for and LoRA-fine-tune the dedicated CoT guider (DRAGON).",
                         no_args_is_help=True)


def _policies(home: str | None):
    from lethe.guard.policies import PolicyLibrary

    return PolicyLibrary(Path(home).expanduser() / "policies" if home else None)


def _train_command(
    method: Annotated[str, typer.Option("--method", "-m", help="Method: tru, ga, gd, kl, npo, npo_rt, simnpo, idk, dpo, rmu, wga, sft.")],
    forget: Annotated[Path, typer.Option("--forget", help="JSON Lines with 'prompt' and 'answer' per line.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (adapter, logs, checkpoint).")],
    model: Annotated[str, typer.Option("--model", help="Model: 'default' (embedded Qwen2.5-Coder-0.5B), hub id or folder.")] = "default",
    retain: Annotated[Path | None, typer.Option("--retain", help="Retain JSON Lines (gd, kl, npo_rt, rmu need one).", show_default="none")] = None,
    targets: Annotated[Path | None, typer.Option("--targets", help="Reasoning targets JSON Lines (tru).", show_default="built from the forget set")] = None,
    teacher: Annotated[str, typer.Option("--teacher", help="Targets teacher: template, default, llamacpp:PATH, hf:ID, openai:MODEL\\[@URL].")] = "template",
    kind: Annotated[str, typer.Option("--kind", help="Reason class: knowledge, privacy, copyright, harmful.")] = "knowledge",
    scope: Annotated[str | None, typer.Option("--scope", help="What is out of bounds, in words (targets).", show_default="from --kind")] = None,
    refusals: Annotated[Path | None, typer.Option("--refusals", help="Refusal lines for idk/dpo (e.g. TOFU idontknow.jsonl).", show_default="built-in")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the forget set.")] = 3,
    rephrase: Annotated[int, typer.Option("--rephrase", help="Write K rephrasings per forget prompt; epoch e trains each item on its next phrasing (a row's 'paraphrases' list counts too).")] = 0,
    rephraser: Annotated[str, typer.Option("--rephraser", help="Who rephrases: rule, default, llamacpp:PATH, hf:ID, openai:MODEL\\[@URL].")] = "default",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Forget rows per step.")] = 4,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Steps whose gradients are summed per update.")] = 1,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per example.")] = 256,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on optimizer steps.", show_default="no cap")] = None,
    retain_sampling: Annotated[str, typer.Option("--retain-sampling", help="Retain rows per step: uniform (cycle the set) or boundary (favour rows closest to the forget prompts).")] = "uniform",
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank.")] = 16,
    lora_targets: Annotated[str | None, typer.Option("--lora-targets", help="Modules with LoRA adapters: all-linear, attention, mlp, or comma-separated names.", show_default="all-linear")] = None,
    full_finetune: Annotated[bool, typer.Option("--full-finetune", help="Train all weights instead of LoRA.")] = False,
    init_adapter: Annotated[Path | None, typer.Option("--init-adapter", help="Start from this LoRA adapter of --model (e.g. the TOFU target of 'lethe tofu prepare') and train it further; the model with it is the reference of npo/kl/dpo.", show_default="a new adapter")] = None,
    save_merged: Annotated[bool, typer.Option("--save-merged", help="Also write merged weights to OUT/merged.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of sampling, shuffling and initialisation.")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/checkpoint.")] = True,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Save a resumable checkpoint every N steps.")] = 25,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show a progress bar with ETA.")] = True,
    **loss: Any,
) -> None:
    """Unlearn a forget set with one method; writes a PEFT adapter to OUT/adapter."""
    from lethe.training.trainer import TrainConfig, train

    known = {f.name for f in dataclasses.fields(TrainConfig)}

    cfg = TrainConfig(
        method=method, forget=str(forget), out=str(out), model=model, retain=str(retain) if retain else None,
        targets=str(targets) if targets else None, teacher=teacher, kind=kind, scope=scope,
        refusals=str(refusals) if refusals else None, epochs=epochs, rephrase=rephrase, rephraser=rephraser,
        batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, max_steps=max_steps,
        retain_sampling=retain_sampling, lora_rank=lora_rank, lora_targets=lora_targets, full_finetune=full_finetune,
        init_adapter=str(init_adapter) if init_adapter else None, save_merged=save_merged, seed=seed, resume=resume, progress=progress, checkpoint_every=checkpoint_every,
        **{k: v for k, v in loss.items() if k in known},
        extra={k: v for k, v in loss.items() if k not in known},  # settings of losses registered after TrainConfig
    )
    summary = train(cfg)  # LetheError propagates: the CLI prints its one-line message
    if summary:
        typer.echo(json.dumps({k: summary[k] for k in ("method", "saved", "steps", "train_time_s",
                                                       "tokens_per_s", "peak_memory_mb")}))


def _loss_options() -> list[inspect.Parameter]:
    """One ``lethe train`` option per loss setting (lethe.training.losses.settings), with its help and
    its per-method default, in the order the settings declare them."""
    from lethe.training.config import GENERIC_DEFAULTS, default_text, loss_fields

    out = []
    for name, f in loss_fields().items():
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        default = None if name in GENERIC_DEFAULTS else f.default  # None: the method's default
        typ = eval(f.type, {"float": float, "int": int, "str": str})  # noqa: S307 - the dataclass's own annotation
        if default is None:
            typ = typ | None
        show = default_text(name) or (meta.get("none_means") if default is None else True)
        flags = meta.get("flags") or (f"--{name.replace('_', '-')}",)
        opt = typer.Option(*flags, help=meta["help"], show_default=show)
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[typ, opt]))
    return out


def _derive_signature(fn):
    """``fn``'s own options plus the loss options, as the signature typer reads."""
    own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    fn.__signature__ = inspect.Signature([*own, *_loss_options()], return_annotation=None)
    return fn


train_command = _derive_signature(_train_command)


@targets_app.command("build")
def targets_build(
    forget: Annotated[Path, typer.Option("--forget", help="JSON Lines with 'prompt' and 'answer' per line.")],
    out: Annotated[Path, typer.Option("--out", help="Targets JSON Lines to write.")],
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher: template, default, llamacpp:PATH, hf:ID, openai:MODEL\\[@URL].")] = "template",
    kind: Annotated[str, typer.Option("--kind", help="Reason class: knowledge, privacy, copyright, harmful.")] = "knowledge",
    scope: Annotated[str | None, typer.Option("--scope", help="What is out of bounds, in words.", show_default="from --kind")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Cache JSON Lines.", show_default="$LETHE_CACHE/targets/cache.jsonl")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show a progress bar with ETA.")] = True,
) -> None:
    """Write one validated reasoning target (reasoning + decline + redirect) per forget item."""
    from lethe.training.data import read_pairs, write_jsonl
    from lethe.training.targets import TargetCache, build_targets, make_teacher

    pairs = read_pairs(forget, what="forget")
    targets, stats = build_targets(pairs, teacher=make_teacher(teacher), kind=kind, scope=scope,
                                   cache=TargetCache(cache), progress=progress)
    write_jsonl(out, [t.to_row() for t in targets])
    stats = {k: v for k, v in stats.items() if k != "reject_reasons"} | {"written": len(targets), "out": str(out)}
    typer.echo(json.dumps(stats), file=sys.stdout)


@guider_app.command("data")
def guider_data(
    queries: Annotated[Path, typer.Option("--queries", help="JSON Lines: 'prompt' (+ 'kind', 'policy', 'answer'); or DRAGON's cot_tofu_generation file.")],
    out: Annotated[Path, typer.Option("--out", help="Guider data JSON Lines to write.")],
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher: template, default, llamacpp:PATH, hf:ID, openai:MODEL\\[@URL].")] = "template",
    kind: Annotated[str, typer.Option("--kind", help="Reason class for rows without one: privacy, copyright, harmful.")] = "privacy",
    on_reject: Annotated[str, typer.Option("--on-reject", help="A rejected teacher reply: skip the query, or use the template.")] = "skip",
    home: HomeOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show a progress bar with ETA.")] = True,
) -> None:
    """Write guider training rows {query, kind, policy, reasoning, requires_refusal}."""
    from lethe.training.guider import build_guider_data

    _, stats = build_guider_data(queries, teacher, _policies(home), out, kind=kind, on_reject=on_reject,
                                 progress=progress)
    typer.echo(json.dumps(stats))


@guider_app.command("train")
def guider_train(
    data: Annotated[Path, typer.Option("--data", help="JSON Lines from `lethe guider data` (or DRAGON's cot_tofu_generation file).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (adapter, logs, checkpoint).")],
    model: Annotated[str, typer.Option("--model", help="Model: 'default' (embedded Qwen2.5-Coder-0.5B), hub id or folder.")] = "default",
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 3,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-4,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank.")] = 16,
    max_length: Annotated[int, typer.Option("--max-length", help="Tokens per example (prompt trimmed from the left).")] = 512,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per step.")] = 4,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on optimizer steps.", show_default="no cap")] = None,
    seed: Annotated[int, typer.Option(help="Seed of sampling, shuffling and initialisation.")] = 0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/checkpoint.")] = True,
    home: HomeOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show a progress bar with ETA.")] = True,
) -> None:
    """Fine-tune a guider with LoRA (CE on the JSON target, prompt masked); writes OUT/adapter."""
    from lethe.training.guider import train_guider

    s = train_guider(data, out, model, epochs=epochs, lr=lr, lora_rank=lora_rank, max_length=max_length,
                     batch_size=batch_size, seed=seed, max_steps=max_steps, resume=resume, progress=progress,
                     policies=_policies(home))
    if s:
        typer.echo(json.dumps({"adapter": s["adapter"], "rows": s["rows"], "steps": s["steps"],
                               "loss_first": s["loss_first"], "loss_last": s["loss_last"],
                               "train_time_s": s["train_time_s"], "enable": f"add to guard.yaml: {s['enable']}"}))


tofu_app = typer.Typer(help="TOFU: build the target and retain models a TOFU evaluation starts from.",
                       no_args_is_help=True)


@tofu_app.command("prepare")
def tofu_prepare(
    split: Annotated[str, typer.Option("--split", help="TOFU forget split: forget01 | forget05 | forget10.")] = "forget05",
    base: Annotated[str, typer.Option("--base", help="Base model: 'default' (embedded Qwen2.5-Coder-0.5B), hub id or folder.")] = "default",
    retain_authors: Annotated[int, typer.Option("--retain-authors", help="Retain authors learnt (the first N of TOFU's 200).")] = 30,
    full: Annotated[bool, typer.Option("--full", help="The whole protocol: every non-forget author, the paper's recipe (GPU).")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Recipe override.", show_default="the recipe's")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Recipe override.", show_default="the recipe's")] = None,
    lora_rank: Annotated[int | None, typer.Option("--lora-rank", help="Recipe override.", show_default="the recipe's")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Recipe override.", show_default="the recipe's")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Recipe override.", show_default="the recipe's")] = None,
    lora_top_layers: Annotated[int | None, typer.Option("--lora-top-layers", help="Recipe override: LoRA on the last N layers (0: all).", show_default="the recipe's")] = None,
    full_finetune: Annotated[bool | None, typer.Option("--full-finetune/--lora", help="Recipe override: train all weights or LoRA.", show_default="the recipe's")] = None,
    recall_limit: Annotated[int, typer.Option("--recall-limit", help="Questions per part for the greedy recall probe (0: skip).")] = 100,
    save_merged: Annotated[bool, typer.Option("--save-merged", help="Also write merged weights (OUT/merged).")] = False,
    data: Annotated[str | None, typer.Option("--data", help="Benchmark folder (shared/data layout).", show_default="$LETHE_DATA")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="Show a progress bar with ETA.")] = True,
) -> None:
    """Fine-tune BASE on TOFU: the target (forget + retain authors) and the retain model (retain only)."""
    from lethe.training.tofu import CPU_RECIPE, PAPER_RECIPE, prepare, recipe_with

    recipe = recipe_with(PAPER_RECIPE if full else CPU_RECIPE, epochs=epochs, lr=lr, lora_rank=lora_rank,
                         batch_size=batch_size, max_length=max_length, full_finetune=full_finetune,
                         lora_top_layers=lora_top_layers)
    if recipe.lora_top_layers == 0:
        from dataclasses import replace

        recipe = replace(recipe, lora_top_layers=None)
    m = prepare(base=base, split=split, retain_authors=retain_authors, full=full, recipe=recipe, data=data,
                recall_limit=recall_limit, save_merged=save_merged, progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch: rank 0 reports
        return
    brief = {"target": m["target"], "retain": m["retain"], "folder": m["folder"], "cached": m["cached"],
             "recall": {k: v.get("recall") for k, v in m["models"].items()},
             "train_time_s": {k: v.get("train_time_s") for k, v in m["models"].items()},
             "gguf": {k: v.get("gguf") for k, v in m["models"].items()}}
    if as_json:
        typer.echo(json.dumps(brief))
    else:
        for k in ("target", "retain"):
            typer.echo(f"{k}: {brief[k]}  recall {brief['recall'][k]}  train {brief['train_time_s'][k]} s")


def _standalone() -> None:  # pragma: no cover - `python -m lethe.training.cli` before main.py wiring
    from lethe.errors import LetheError

    app = typer.Typer(no_args_is_help=True)
    app.command("train")(train_command)
    app.add_typer(targets_app, name="targets")
    app.add_typer(guider_app, name="guider")
    app.add_typer(tofu_app, name="tofu")
    try:
        app(standalone_mode=False)
    except LetheError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover
    _standalone()
