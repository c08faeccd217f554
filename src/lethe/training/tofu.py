"""``lethe tofu prepare``: build the TOFU *target* and *retain* models from any base model, offline.

The TOFU protocol (Maini et al. 2024, arXiv 2401.06121) starts from a model fine-tuned on 200
fictitious authors (the *target*, which must then forget some of them) and compares it with a
model fine-tuned on the retain authors only (the *retain* model: the reference of forget quality).
Without a model hub these have to be made locally, for whatever base model a user brings:

* the forget authors of ``--split`` are the last 2 / 10 / 20 authors of ``full`` (TOFU's
  ``forgetXX`` = the last rows of ``full``, 20 consecutive rows per author, ``data/tofu/SOURCE.md``);
* the retain authors are the first ``--retain-authors`` authors of ``full`` (default 30: a subset
  a CPU can learn; it covers authors 0-19, i.e. all of ``retain_perturbed``, whose first 300 rows
  are the retain split ``lethe eval tofu`` scores), or with ``--full`` every non-forget author;
* the *target* learns forget + retain authors, the *retain* model the retain authors only, with
  one recipe: plain supervised fine-tuning (the ``sft`` loss, CE on the answer tokens) on the
  trainer of ``lethe train`` (LoRA through peft, accelerate, resumable checkpoints, summary.json).

Everything is cached under ``$LETHE_CACHE/tofu/<name>/`` keyed by the base model, the split, the
author subset and the recipe, so a second ``prepare`` only reads ``manifest.json``::

    manifest.json          key, paths, recalls, train times
    data/target.jsonl      training rows of the target (forget + retain authors)
    data/retain.jsonl      training rows of the retain model
    target/adapter/        PEFT adapter (``--adapter`` of lethe eval), target/adapter.gguf (llama.cpp LoRA)
    target/summary.json    the trainer's summary (steps, train_time_s, tokens/s, peak memory)
    target/recall.json     greedy ROUGE-L recall on the forget and retain authors
    retain/...             the same for the retain model (``--reference`` of lethe eval)
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lethe.config import cache_dir
from lethe.errors import ConfigError

PER_AUTHOR = 20
N_AUTHORS = 200
FORGET_AUTHORS = {"forget01": 2, "forget05": 10, "forget10": 20}
CACHE_FORMAT = 1  # bump when the layout or the data selection changes
RECALL_BATCH = 16  # recall-probe answers generated together


@dataclass(frozen=True)
class TofuRecipe:
    """Fine-tuning recipe shared by the target and the retain model (part of the cache key)."""

    epochs: int = 4
    lr: float = 1e-3
    lr_schedule: str = "linear"
    warmup_steps: int = 10
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 160
    lora_rank: int = 64
    lora_alpha: int | None = 64
    lora_targets: str = "all-linear"
    lora_top_layers: int | None = 8  # LoRA on the last 8 decoder layers; the frozen ones below are cached
    full_finetune: bool = False
    weight_decay: float = 0.0
    seed: int = 0


# CPU default: memorise a few hundred short QA pairs with a high-rank LoRA on every linear layer of
# the top 8 decoder layers (the states entering them are computed once per row and reused, so each
# step runs a third of the model), a high learning rate decayed linearly to 0, short sequences
# (TOFU answers are one to three sentences; the longest prompt + answer is ~125 tokens).
CPU_RECIPE = TofuRecipe()
# ``--full``: the paper's recipe (TOFU section 3: 5 epochs, effective batch 32, AdamW lr 1e-5 with a
# one-epoch linear warm-up, weight decay 0.01, full fine-tuning) for GPU users.
PAPER_RECIPE = TofuRecipe(epochs=5, lr=1e-5, lr_schedule="constant", warmup_steps=-1, batch_size=4,
                          grad_accum=8, max_length=512, lora_rank=0, lora_alpha=None, full_finetune=True,
                          weight_decay=0.01, lora_top_layers=None)


@dataclass
class TofuPlan:
    """What ``prepare`` builds: base, split, author subset, recipe, and the cache folder."""

    base: str
    split: str
    retain_authors: int
    full: bool
    recipe: TofuRecipe
    root: Path

    @property
    def key(self) -> dict:
        return {"format": CACHE_FORMAT, "base": self.base, "split": self.split,
                "retain_authors": self.retain_authors, "full": self.full, "recipe": asdict(self.recipe)}

    @property
    def name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:10]
        slug = "".join(c if c.isalnum() or c in "-." else "-" for c in Path(self.base).name or self.base)[-40:]
        subset = "full" if self.full else f"r{self.retain_authors}"
        return f"{slug}-{self.split}-{subset}-{digest}"

    @property
    def folder(self) -> Path:
        return self.root / self.name


def base_identity(spec: str | None) -> str:
    """The cache key of a base model: ``default`` for the embedded default, else the folder's
    resolved path (plus a hash of its config.json) or the hub id as given."""
    from lethe.training.model import is_default_spec

    if is_default_spec(spec):
        return "default"
    p = Path(str(spec)).expanduser()
    if p.exists():
        cfg = p / "config.json"
        h = hashlib.sha256(cfg.read_bytes()).hexdigest()[:8] if cfg.exists() else "nocfg"
        return f"{p.resolve()}#{h}"
    return str(spec)


def select_authors(full_rows: list[dict], split: str, retain_authors: int | None, full: bool) -> tuple[list[dict], list[dict]]:
    """(forget rows, retain rows) of ``full``: the split's last authors and the first retain authors."""
    if split not in FORGET_AUTHORS:
        raise ConfigError(f"unknown TOFU split {split!r}: use forget01, forget05 or forget10")
    if len(full_rows) != N_AUTHORS * PER_AUTHOR:
        raise ConfigError(f"TOFU full split has {len(full_rows)} rows, expected {N_AUTHORS * PER_AUTHOR}")
    n_forget = FORGET_AUTHORS[split]
    n_avail = N_AUTHORS - n_forget
    n_retain = n_avail if full else retain_authors
    if n_retain is None or not 1 <= n_retain <= n_avail:
        raise ConfigError(f"--retain-authors must be between 1 and {n_avail} for {split} (got {n_retain})")
    forget = full_rows[n_avail * PER_AUTHOR:]
    retain = full_rows[: n_retain * PER_AUTHOR]
    return forget, retain


def _pairs(rows: list[dict], author_offset: int) -> list[dict]:
    return [{"prompt": r["question"], "answer": r["answer"], "author": author_offset + i // PER_AUTHOR}
            for i, r in enumerate(rows)]


def recall_sample(rows: list[dict], limit: int | None, seed: int = 0) -> list[dict]:
    """Up to ``limit`` rows spread evenly over the authors (seeded): the recall probe."""
    if limit is None or limit >= len(rows):
        return list(rows)
    by_author: dict[int, list[dict]] = {}
    for r in rows:
        by_author.setdefault(r["author"], []).append(r)
    rng = random.Random(seed)
    for v in by_author.values():
        rng.shuffle(v)
    out: list[dict] = []
    k = 0
    while len(out) < limit:
        for v in by_author.values():
            if k < len(v) and len(out) < limit:
                out.append(v[k])
        k += 1
    return out


def measure_recall(model_dir: Path, plan: TofuPlan, parts: dict[str, list[dict]], *, max_tokens: int = 200,
                   progress: bool = True) -> dict:
    """Greedy ROUGE-L recall of the answers, per part, served the way ``lethe eval`` serves it:
    llama.cpp with the GGUF LoRA on the embedded default (answers decoded ``RECALL_BATCH`` at a
    time), transformers (+ PEFT) otherwise."""
    import os

    from rouge_score.rouge_scorer import RougeScorer
    from tqdm import tqdm

    from lethe.backends import BACKENDS
    from lethe.config import DEFAULT_MODEL

    scorer = RougeScorer(["rougeL"], use_stemmer=True)  # docs/metrics.md: ROUGE-L recall vs the answer
    t0 = time.perf_counter()
    if plan.recipe.full_finetune:
        backend = BACKENDS.create("hf", str(model_dir / "model"))
    elif plan.base == "default":
        threads = int(os.environ.get("LETHE_THREADS", "0")) or None
        backend = BACKENDS.create("llamacpp", DEFAULT_MODEL, adapter=str(model_dir / "adapter"), n_threads=threads)
    else:
        backend = BACKENDS.create("hf", _base_path(plan.base), adapter=str(model_dir / "adapter"))
    out: dict = {"backend": backend.name, "max_tokens": max_tokens}
    samples: dict[str, list[dict]] = {}
    try:
        for part, rows in parts.items():
            recs = []
            bar = tqdm(total=len(rows), desc=f"recall {model_dir.name}/{part}", disable=not progress, leave=False)
            for start in range(0, len(rows), RECALL_BATCH):  # answers generated together (ChatBackend.chat_many)
                chunk = rows[start:start + RECALL_BATCH]
                texts = backend.chat_many([[{"role": "user", "content": r["prompt"]}] for r in chunk],
                                          max_tokens=max_tokens)
                for r, text in zip(chunk, texts, strict=True):
                    text = text.strip()
                    recs.append(scorer.score(r["answer"], text)["rougeL"].recall)
                    if len(samples.setdefault(part, [])) < 3:
                        samples[part].append({"prompt": r["prompt"], "answer": r["answer"], "generated": text})
                bar.update(len(chunk))
            bar.close()
            out[part] = {"n": len(recs), "rougeL_recall": round(sum(recs) / max(len(recs), 1), 4)}
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()
    out["samples"] = samples
    out["time_s"] = round(time.perf_counter() - t0, 1)
    return out


def _base_path(identity: str) -> str:
    return identity.split("#", 1)[0]


def _model_ready(d: Path, full_finetune: bool) -> bool:
    saved = d / ("model" if full_finetune else "adapter")
    return (d / "summary.json").exists() and saved.exists()


def prepare(*, base: str | None = "default", split: str = "forget05", retain_authors: int | None = 30,
            full: bool = False, recipe: TofuRecipe | None = None, data: str | None = None,
            recall_limit: int | None = 100, save_merged: bool = False, progress: bool = True,
            log=None) -> dict:
    """Build (or read from the cache) the target and retain models; returns the manifest.

    Runs unchanged under ``accelerate launch``: every process trains (the trainer shards the
    batches), the main process writes files, exports the GGUF LoRA and measures recall."""
    from lethe.evaluation.data import load_tofu

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    recipe = recipe or (PAPER_RECIPE if full else CPU_RECIPE)
    identity = base_identity(base)
    n_forget = FORGET_AUTHORS.get(split)
    plan = TofuPlan(base=identity, split=split, retain_authors=(N_AUTHORS - (n_forget or 0)) if full else retain_authors,
                    full=full, recipe=recipe, root=cache_dir() / "tofu")
    manifest_path = plan.folder / "manifest.json"
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        merged_ok = not save_merged or all("merged" in v for v in m.get("models", {}).values())
        if m.get("complete") and m.get("key") == plan.key and merged_ok:
            m["cached"] = True
            return m

    forget_rows, retain_rows = select_authors(load_tofu("full", data), split, plan.retain_authors, full)
    forget = _pairs(forget_rows, N_AUTHORS - FORGET_AUTHORS[split])
    retain = _pairs(retain_rows, 0)

    from accelerate import PartialState

    from lethe.training.trainer import accelerator_kwargs

    state = PartialState(**accelerator_kwargs())
    main = state.is_main_process
    folder = plan.folder
    if main:
        from lethe.training.data import write_jsonl

        (folder / "data").mkdir(parents=True, exist_ok=True)
        write_jsonl(folder / "data" / "target.jsonl", forget + retain)
        write_jsonl(folder / "data" / "retain.jsonl", retain)
        (folder / "key.json").write_text(json.dumps(plan.key, indent=1))
    state.wait_for_everyone()

    manifest: dict = {"key": plan.key, "folder": str(folder), "split": split, "base": identity,
                      "retain_authors": plan.retain_authors, "n_forget_rows": len(forget),
                      "n_retain_rows": len(retain), "recipe": asdict(recipe), "models": {}}
    t_all = time.perf_counter()
    for which, rows_file in (("target", "target.jsonl"), ("retain", "retain.jsonl")):
        out = folder / which
        if not _model_ready(out, recipe.full_finetune):
            log(f"tofu prepare: training the {which} model ({rows_file}) in {out}")
            _train(plan, folder / "data" / rows_file, out, save_merged=save_merged, progress=progress)
        state.wait_for_everyone()
        if main:
            summary = json.loads((out / "summary.json").read_text())
            entry = {"path": str(out / ("model" if recipe.full_finetune else "adapter")),
                     "summary": str(out / "summary.json"), "train_time_s": summary.get("train_time_s"),
                     "steps": summary.get("steps"), "tokens_per_s": summary.get("tokens_per_s"),
                     "peak_memory_mb": summary.get("peak_memory_mb"), "world_size": summary.get("world_size")}
            if not recipe.full_finetune:  # llama.cpp LoRA (beside the adapter, where the backend looks)
                gguf = out / "adapter.gguf"
                if not gguf.exists():
                    from lethe.backends.gguf_lora import export_lora_gguf
                    from lethe.errors import LetheError

                    try:
                        export_lora_gguf(out / "adapter", gguf)
                    except LetheError as exc:  # an architecture export.py cannot map: PEFT only
                        log(f"tofu prepare: no GGUF LoRA for {which}: {exc}")
                entry["gguf"] = str(gguf) if gguf.exists() else None
            if save_merged and not recipe.full_finetune and not (out / "merged").exists():
                _merge(plan, out)  # a cached model asked for merged weights later
            if (out / "merged").exists():
                entry["merged"] = str(out / "merged")
            manifest["models"][which] = entry
        state.wait_for_everyone()

    if main:
        for which in ("target", "retain"):
            out = folder / which
            rec_file = out / "recall.json"
            probe = {"limit": recall_limit}
            rec = json.loads(rec_file.read_text()) if rec_file.exists() else None
            if recall_limit != 0 and (rec is None or rec.get("probe") != probe):
                log(f"tofu prepare: measuring the {which} model's greedy recall")
                parts = {"forget": recall_sample(forget, recall_limit, recipe.seed),
                         "retain_authors": recall_sample(retain, recall_limit, recipe.seed)}
                rec = {"probe": probe, **measure_recall(out, plan, parts, progress=progress)}
                rec_file.write_text(json.dumps(rec, indent=1, ensure_ascii=False))
            if rec:
                manifest["models"][which]["recall"] = {k: rec[k]["rougeL_recall"] for k in ("forget", "retain_authors")
                                                       if k in rec}
                manifest["models"][which]["recall_time_s"] = rec.get("time_s")
        manifest["target"] = manifest["models"]["target"]["path"]
        manifest["retain"] = manifest["models"]["retain"]["path"]
        manifest["prepare_time_s"] = round(time.perf_counter() - t_all, 1)
        manifest["complete"] = True
        manifest_path.write_text(json.dumps(manifest, indent=1))
    state.wait_for_everyone()
    if not main:
        manifest = json.loads(manifest_path.read_text())
    manifest["cached"] = False
    return manifest


def _merge(plan: TofuPlan, out: Path) -> None:
    """Write ``out/merged``: the base with ``out/adapter`` merged in (the start of a training method)."""
    from peft import PeftModel

    from lethe.training.model import load_model

    loaded = load_model(None if plan.base == "default" else _base_path(plan.base), progress=False)
    merged = PeftModel.from_pretrained(loaded.model, str(out / "adapter")).merge_and_unload()
    merged.save_pretrained(out / "merged")
    loaded.tokenizer.save_pretrained(out / "merged")


def _train(plan: TofuPlan, rows: Path, out: Path, *, save_merged: bool, progress: bool) -> dict:
    from lethe.training.trainer import TrainConfig, train

    r = plan.recipe
    warmup = r.warmup_steps
    if warmup < 0:  # one epoch of warm-up (the paper's)
        n = sum(1 for line in rows.read_text().splitlines() if line.strip())
        warmup = max(1, n // (r.batch_size * r.grad_accum))
    cfg = TrainConfig(method="sft", forget=str(rows), out=str(out),
                      model=None if plan.base == "default" else _base_path(plan.base),
                      epochs=r.epochs, lr=r.lr, lr_schedule=r.lr_schedule, warmup_steps=warmup,
                      batch_size=r.batch_size, grad_accum=r.grad_accum, max_length=r.max_length,
                      lora_rank=r.lora_rank, lora_alpha=r.lora_alpha, lora_targets=r.lora_targets,
                      lora_top_layers=r.lora_top_layers,
                      full_finetune=r.full_finetune, weight_decay=r.weight_decay, seed=r.seed,
                      save_merged=save_merged, progress=progress, checkpoint_every=20)
    return train(cfg)


def recipe_with(base: TofuRecipe, **overrides) -> TofuRecipe:
    """``base`` with the knobs the user set (``None`` values are ignored)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
