"""One unlearning trainer for every method: ``transformers`` + ``peft`` + ``accelerate``.

The same loop runs on CPU and under ``accelerate launch`` on one or many GPUs (DDP, FSDP
or DeepSpeed come from accelerate's own config). Output folder::

    OUT/adapter/          PEFT adapter + tokenizer (or OUT/model/ for full fine-tuning)
    OUT/merged/           merged weights (``save_merged=True``)
    OUT/targets.jsonl     the reasoning/refusal targets that were trained on
    OUT/train_log.jsonl   one JSON row per optimizer step (loss and its parts, tokens/s)
    OUT/checkpoint/       trainable weights + optimizer + position, for ``resume``
    OUT/summary.json      config, base model path, steps, time, tokens/s, peak memory
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

from lethe.errors import LetheError
from lethe.training.config import GENERIC_DEFAULTS, METHOD_DEFAULTS, TrainConfig, fill_defaults
from lethe.training.data import UnlearnBatches, boundary_weights, load_refusals, read_pairs, write_jsonl
from lethe.training.losses import LOSSES, LossContext, PrefixCache, first_trained_layer
from lethe.training.losses.prefix import model_identity, store_file
from lethe.training.rephrase import forget_variants

__all__ = ["GENERIC_DEFAULTS", "METHOD_DEFAULTS", "TrainConfig", "accelerator_kwargs", "prepare_targets", "train"]

def accelerator_kwargs() -> dict:
    """``cpu=True`` when several processes were launched (``accelerate launch --multi_gpu`` or
    ``torchrun`` set ``WORLD_SIZE``) on a machine without CUDA: accelerate then runs them as one
    MULTI_CPU (gloo) group instead of independent single processes."""
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return {"cpu": True}
    return {}


def _peak_mem_mb(device) -> float:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _refusal_for(prompt: str, refusals: list[str]) -> str:
    h = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
    return refusals[h % len(refusals)]


def prepare_targets(cfg: TrainConfig, loss, forget, out: Path) -> list[str] | None:
    """The per-item answers to learn instead (reasoning targets or refusals), saved to OUT."""
    if loss.target_kind is None:
        return None
    if loss.target_kind == "refusal":
        refusals = load_refusals(cfg.refusals)
        texts = [_refusal_for(p.prompt, refusals) for p in forget]
        write_jsonl(out / "targets.jsonl", [{"prompt": p.prompt, "target": t, "source": "refusal"}
                                            for p, t in zip(forget, texts, strict=True)])
        return texts
    from lethe.training.targets import build_targets, load_targets, make_teacher

    if cfg.targets:
        if not Path(cfg.targets).exists():
            raise LetheError(f"targets file not found: {cfg.targets}")
        mapping = load_targets(cfg.targets)
        def key(p) -> str:  # a rephrasing takes its source prompt's target unless it has its own
            return p.prompt if p.prompt in mapping else (p.meta or {}).get("source_prompt", p.prompt)

        missing = [p.prompt for p in forget if key(p) not in mapping]
        if missing:
            raise LetheError(f"{len(missing)} forget prompts have no target in {cfg.targets} (first: {missing[0][:60]!r})")
        texts = [mapping[key(p)] for p in forget]
        write_jsonl(out / "targets.jsonl", [{"prompt": p.prompt, "target": t, "source": cfg.targets}
                                            for p, t in zip(forget, texts, strict=True)])
        return texts
    targets, stats = build_targets(forget, teacher=make_teacher(cfg.teacher), kind=cfg.kind, scope=cfg.scope,
                                   progress=cfg.progress)
    write_jsonl(out / "targets.jsonl", [t.to_row() for t in targets])
    (out / "targets_stats.json").write_text(json.dumps(stats, indent=1))
    return [t.text for t in targets]


def train(cfg: TrainConfig) -> dict:
    """Run one unlearning job; returns the summary written to ``OUT/summary.json``."""
    import torch
    from accelerate import Accelerator
    from tqdm import tqdm

    from lethe.training.model import apply_lora, continue_lora, load_model, lora_target_modules, num_layers

    loss_fn = LOSSES.create(cfg.method)
    fill_defaults(cfg)
    forget = read_pairs(cfg.forget, what="forget")
    if loss_fn.needs_retain and not cfg.retain:
        raise LetheError(f"method '{cfg.method}' needs a retain set: pass --retain R.jsonl")
    retain = read_pairs(cfg.retain, what="retain") if cfg.retain and loss_fn.uses_retain else None
    if cfg.retain_loss not in ("nll", "kl"):
        raise LetheError(f"unknown retain loss {cfg.retain_loss!r}: use nll or kl")
    if cfg.retain_sampling not in ("uniform", "boundary"):
        raise LetheError(f"unknown retain sampling {cfg.retain_sampling!r}: use uniform or boundary")
    if cfg.retain_reduce not in ("token", "row"):
        raise LetheError(f"unknown retain reduce {cfg.retain_reduce!r}: use token or row")
    if cfg.head_tokens < 0 or cfg.head_weight < 0:  # head_weight is filled from the defaults above
        raise LetheError(f"--head-tokens and --head-weight must be >= 0 (got {cfg.head_tokens}, {cfg.head_weight})")
    if cfg.full_finetune and not loss_fn.full_finetune:
        raise LetheError(f"{cfg.method} trains LoRA adapters on the layers it chooses; drop --full-finetune")
    if cfg.full_finetune and cfg.init_adapter:
        raise LetheError("--init-adapter trains that adapter further; drop --full-finetune (or merge it first)")

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(gradient_accumulation_steps=1, **accelerator_kwargs())
    main = accelerator.is_main_process
    _seed_all(cfg.seed)

    if cfg.rephrase < 0:
        raise LetheError("--rephrase must be 0 or more")
    variants = forget_variants(forget, cfg.rephrase, cfg.rephraser, out, progress=cfg.progress) if main else None
    accelerator.wait_for_everyone()
    if variants is None:  # other ranks read the rephrasings rank 0 cached in OUT
        variants = forget_variants(forget, cfg.rephrase, cfg.rephraser, out, progress=False)
    phrasings = [p for vs in variants for p in vs]
    groups, start = [], 0
    for vs in variants:
        groups.append(list(range(start, start + len(vs))))
        start += len(vs)

    loaded = load_model(cfg.model, dtype=cfg.dtype, progress=main and cfg.progress)
    model, tok = loaded.model, loaded.tokenizer
    target_texts = prepare_targets(cfg, loss_fn, phrasings, out) if main else None
    accelerator.wait_for_everyone()
    if not main and loss_fn.target_kind is not None:  # other ranks read what rank 0 built
        rows = [json.loads(x) for x in (out / "targets.jsonl").read_text().splitlines() if x.strip()]
        target_texts = [r["target"] for r in rows]

    n_layers = num_layers(model)
    loss_fn.configure(cfg, n_layers)  # e.g. RMU picks its steered layer
    ref_model = None
    needs_ref = loss_fn.uses_reference(retain_loss=cfg.retain_loss, has_retain=retain is not None, ga_term=cfg.ga_term)
    if cfg.full_finetune:
        if needs_ref:
            import copy

            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    elif cfg.init_adapter:  # unlearning continues the given adapter (same modules, rank and layers)
        if loss_fn.lora_layers(lora_target_modules(cfg.lora_targets)) is not None:
            raise LetheError(f"--init-adapter: {cfg.method} places its own adapters; start it from merged weights")
        model, ref_model = continue_lora(model, cfg.init_adapter, needs_ref)
    else:
        targets = lora_target_modules(cfg.lora_targets)
        layers = None
        placed = loss_fn.lora_layers(targets)  # a method that needs particular layers (RMU) places them
        if placed is not None:
            targets, layers = placed
        elif cfg.lora_top_layers and cfg.lora_top_layers < n_layers:  # as many or more: every layer
            if cfg.lora_top_layers < 0:
                raise LetheError(f"--lora-top-layers must be 1 or more (got {cfg.lora_top_layers})")
            layers = list(range(n_layers - cfg.lora_top_layers, n_layers))
        model = apply_lora(model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, target_modules=targets, layers=layers)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    if ref_model is not None:
        ref_model.to(accelerator.device)
    device = accelerator.device

    weights = (boundary_weights([p.prompt for p in phrasings], [p.prompt for p in retain])
               if retain and cfg.retain_sampling == "boundary" else None)
    batches = UnlearnBatches(tok, phrasings, targets=target_texts, retain=retain, batch_size=cfg.batch_size,
                             max_length=cfg.max_length, seed=cfg.seed, system=cfg.system,
                             retain_batch_size=cfg.retain_batch_size, groups=groups,
                             forget_tokens=cfg.forget_tokens, retain_weights=weights)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro_per_epoch = max(1, math.ceil(len(batches) / world))
    total_steps = math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    ctx = LossContext(model=model, ref_model=ref_model, alpha=cfg.alpha, lam=cfg.lam, beta=cfg.beta,
                      gamma=cfg.gamma, rmu_layer=cfg.rmu_layer, rmu_c=cfg.rmu_c, ga_term=cfg.ga_term,
                      retain_loss=cfg.retain_loss, retain_reduce=cfg.retain_reduce,
                      head_tokens=cfg.head_tokens, head_weight=cfg.head_weight,
                      extra={**loss_fn.context_extra(), **cfg.extra})
    # Adapters on the top layers only (--lora-top-layers, or an --init-adapter placed so): the frozen
    # layers below map each row to fixed states, computed once and reused by the model and its
    # reference (not under DDP, whose forward must see every call)
    first = first_trained_layer(model) if cfg.prefix_cache and not cfg.full_finetune and world == 1 else None
    prefix = PrefixCache(first).attach(model, ref_model) if first else None
    prefix_file = prefix_id = None
    if prefix is not None and cfg.prefix_cache_mb > 0:  # states an earlier run on this base computed
        from lethe.config import cache_dir

        prefix_id = model_identity(loaded.path, cfg.dtype)
        prefix_file = store_file(cache_dir() / "prefix", prefix_id, first)
        prefix.load(prefix_file, prefix_id)

    # --- resume ---------------------------------------------------------------------------
    ckpt = out / "checkpoint"
    step, start_epoch, skip = 0, 0, 0
    if cfg.resume and (ckpt / "state.json").exists():
        state = json.loads((ckpt / "state.json").read_text())
        if state.get("method") == cfg.method:
            named = dict(accelerator.unwrap_model(model).named_parameters())
            saved = torch.load(ckpt / "trainable.pt", map_location=device)
            with torch.no_grad():
                for n, t in saved.items():
                    named[n].copy_(t)
            optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=False))
            step, start_epoch, skip = state["step"], state["epoch"], state["micro_in_epoch"]
            if main:
                print(f"resuming {cfg.method} from step {step}", file=sys.stderr)
    if step == 0 and main:
        (out / "train_log.jsonl").write_text("")

    def save_checkpoint(epoch: int, micro: int) -> None:
        if not main:
            return
        ckpt.mkdir(exist_ok=True)
        named = accelerator.unwrap_model(model).named_parameters()
        torch.save({n: p.detach().cpu() for n, p in named if p.requires_grad}, ckpt / "trainable.pt")
        torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
        (ckpt / "state.json").write_text(json.dumps({"method": cfg.method, "step": step, "epoch": epoch,
                                                     "micro_in_epoch": micro}))

    if cfg.lr_schedule not in ("constant", "linear", "cosine"):
        raise LetheError(f"unknown lr schedule {cfg.lr_schedule!r}: use constant, linear or cosine")

    def lr_at(s: int) -> float:
        if cfg.warmup_steps and s < cfg.warmup_steps:
            return cfg.lr * (s + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return cfg.lr
        frac = (s - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        if cfg.lr_schedule == "linear":
            return cfg.lr * max(0.0, 1.0 - frac)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))

    # --- loop -------------------------------------------------------------------------------
    bar = tqdm(total=total_steps, initial=step, desc=f"lethe train {cfg.method}", disable=not (main and cfg.progress))
    t0, tokens, tokens_window, t_window = time.perf_counter(), 0, 0, time.perf_counter()
    agg: dict[str, float] = {}
    micro_count = 0
    done = step >= total_steps
    epoch = start_epoch
    pos = (start_epoch, skip)
    while not done:
        for micro, batch in enumerate(batches.epoch(epoch, rank=rank, world=world)):
            if epoch == start_epoch and micro < skip:
                continue
            batch = {k: ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v)
                     for k, v in batch.items()}
            n_tok = sum(int(v["attention_mask"].sum()) for v in batch.values() if isinstance(v, dict))
            loss, parts = loss_fn(ctx, batch)
            accelerator.backward(loss / cfg.grad_accum)
            tokens += n_tok
            tokens_window += n_tok
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                agg[k] = agg.get(k, 0.0) + v / cfg.grad_accum
            micro_count += 1
            if micro_count % cfg.grad_accum:
                continue
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            now = time.perf_counter()
            row = {"step": step, "epoch": epoch, **{k: round(v, 5) for k, v in agg.items()},
                   "lr": lr_at(step - 1), "tokens": tokens, "tokens_per_s": round(tokens_window / max(now - t_window, 1e-9), 1),
                   "elapsed_s": round(now - t0, 2)}
            tokens_window, t_window = 0, now
            if main:
                with (out / "train_log.jsonl").open("a") as f:
                    f.write(json.dumps(row) + "\n")
                bar.set_postfix({k: f"{v:.3g}" for k, v in agg.items()})
                bar.update(1)
            agg = {}
            pos = (epoch, micro + 1)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_checkpoint(epoch, micro + 1)
            if step >= total_steps:
                done = True
                break
        if not done:
            epoch, skip = epoch + 1, 0
    bar.close()
    elapsed = time.perf_counter() - t0
    save_checkpoint(*pos)
    prefix_saved = False
    if main and prefix_file is not None and prefix.misses:
        prefix_saved = prefix.save(prefix_file, prefix_id, max_mb=cfg.prefix_cache_mb)

    # --- save ---------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    summary: dict = {}
    if main:
        unwrapped = accelerator.unwrap_model(model)
        if cfg.full_finetune:
            unwrapped.save_pretrained(out / "model")
            tok.save_pretrained(out / "model")
            saved_as = str(out / "model")
        else:
            unwrapped.save_pretrained(out / "adapter")
            tok.save_pretrained(out / "adapter")
            saved_as = str(out / "adapter")
            if cfg.save_merged:
                merged = unwrapped.merge_and_unload()
                merged.save_pretrained(out / "merged")
                tok.save_pretrained(out / "merged")
        summary = {
            "method": cfg.method,
            "model_spec": loaded.spec,
            "base_model_path": loaded.path,
            "saved": saved_as,
            "merged": str(out / "merged") if cfg.save_merged and not cfg.full_finetune else None,
            "steps": step,
            "train_time_s": round(elapsed, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
            "peak_memory_mb": round(_peak_mem_mb(device), 1),
            "trainable_params": n_trainable,
            "world_size": world,
            "device": str(device),
            "n_forget": len(forget),
            "n_forget_phrasings": len(phrasings),
            "n_retain": len(retain) if retain else 0,
            "rmu_layer": loss_fn.describe().get("rmu_layer"),
            "prefix_cache": ({"layer": prefix.start, "rows": len(prefix.rows), "hits": prefix.hits,
                              "misses": prefix.misses, "loaded": prefix.loaded, "saved": prefix_saved,
                              "file": str(prefix_file) if prefix_file else None}
                             if prefix is not None else None),
            "config": asdict(cfg),
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
