"""The frozen-prefix cache: adapters on the top layers only, every loss served from cached states."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from lethe.training.data import Pair, UnlearnBatches  # noqa: E402
from lethe.training.losses import LOSSES, LossContext, PrefixCache, first_trained_layer  # noqa: E402
from lethe.training.model import apply_lora, load_model  # noqa: E402
from lethe.training.tiny import make_tiny_model  # noqa: E402

PAIRS = [Pair("Who wrote the play Romeo and Juliet?", "William Shakespeare wrote it."),
         Pair("What is the capital of France?", "Paris."),
         Pair("Which planet is known as the Red Planet?", "Mars is the Red Planet, it is.")]
RETAIN = [Pair("What colour is the sky on a clear day?", "Blue, because of Rayleigh scattering."),
          Pair("How many legs does a spider have?", "Eight.")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny4") / "m", layers=4)


def _top_lora(tiny, layers=(2, 3)):
    loaded = load_model(str(tiny), progress=False)
    model = apply_lora(loaded.model, rank=4, layers=list(layers))
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # non-zero adapters, so the top layers differ from the base
            p.data.normal_(0, 0.1)
    return loaded, model


def _run(loss_fn, ctx, batch):
    loss, _ = loss_fn(ctx, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in ctx.model.named_parameters() if p.requires_grad}
    ctx.model.zero_grad()
    return float(loss), grads


def _detach(model):
    from lethe.training.losses.prefix import ATTR

    for m in (model, getattr(model, "get_base_model", lambda: None)()):
        if m is not None and hasattr(m, ATTR):
            delattr(m, ATTR)


def test_first_trained_layer_reads_where_the_adapters_sit(tiny):
    _, top = _top_lora(tiny)
    assert first_trained_layer(top) == 2
    loaded = load_model(str(tiny), progress=False)
    assert first_trained_layer(apply_lora(loaded.model, rank=4)) == 0  # every layer: nothing to cache
    loaded = load_model(str(tiny), progress=False)
    loaded.model.get_input_embeddings().weight.requires_grad_(True)
    assert first_trained_layer(loaded.model) is None  # trained embeddings: the prefix is not fixed
    with pytest.raises(ValueError):
        PrefixCache(0)


@pytest.mark.parametrize("method,retain_loss", [("sft", "nll"), ("npo_rt", "kl"), ("gd", "nll"), ("tru", "kl")])
def test_cached_prefix_gives_the_same_loss_and_gradients(tiny, method, retain_loss):
    """The loss and its gradients from cached bottom-layer states equal the full forward's, for the
    model and for the reference (the LoRA base with the adapter disabled)."""
    loaded, model = _top_lora(tiny)
    loss_fn = LOSSES.create(method)
    targets = ["That is out of scope: I will not answer it."] * len(PAIRS) if loss_fn.target_kind else None
    batches = UnlearnBatches(loaded.tokenizer, PAIRS, targets=targets, retain=RETAIN if loss_fn.uses_retain else None,
                             batch_size=3, max_length=64, retain_batch_size=2)
    batch = next(batches.epoch(0))
    full = _run(loss_fn, LossContext(model=model, retain_loss=retain_loss), batch)
    cache = PrefixCache(2).attach(model)
    first = _run(loss_fn, LossContext(model=model, retain_loss=retain_loss), batch)
    assert cache.misses > 0 and len(cache.rows) == cache.misses
    misses = cache.misses
    again = _run(loss_fn, LossContext(model=model, retain_loss=retain_loss), batch)
    assert cache.misses == misses and cache.hits > 0  # the second step is served from the cache
    _detach(model)
    assert full[0] == pytest.approx(first[0], abs=1e-5) and full[0] == pytest.approx(again[0], abs=1e-5)
    assert max(float((full[1][n] - first[1][n]).abs().max()) for n in full[1]) < 1e-5


def test_cached_prefix_serves_a_merged_reference(tiny):
    """Unlearning from a trained adapter (``--init-adapter``): the reference is that adapter merged
    in, a separate model whose bottom layers are the base's; NPO's log-ratio is 0 at the start
    with the cache as without it."""
    from lethe.training.model import continue_lora

    loaded, model = _top_lora(tiny)
    adapter = tiny.parent / "adapter"
    model.save_pretrained(adapter)
    base = load_model(str(tiny), progress=False)
    policy, ref = continue_lora(base.model, adapter, reference=True)
    assert first_trained_layer(policy) == 2
    batch = next(UnlearnBatches(base.tokenizer, PAIRS, batch_size=3, max_length=64).epoch(0))
    npo = LOSSES.create("npo")
    full = _run(npo, LossContext(model=policy, ref_model=ref), batch)
    cache = PrefixCache(2).attach(policy, ref)
    cached = _run(npo, LossContext(model=policy, ref_model=ref), batch)
    assert len(cache.rows) == 3 and cache.hits == 3  # the reference reused the policy's states
    assert full[0] == pytest.approx(cached[0], abs=1e-5) == pytest.approx(2 / 0.1 * float(torch.log(torch.tensor(2.0))), rel=1e-4)
    assert max(float((full[1][n] - cached[1][n]).abs().max()) for n in full[1]) < 1e-5


def test_train_from_an_adapter_uses_the_cache_and_logs_the_same_losses(tiny, tmp_path):
    """``lethe train --init-adapter`` on a top-layer adapter: the run reports its prefix cache, and
    its losses match a run with the cache off."""
    from lethe.training.config import TrainConfig
    from lethe.training.data import write_jsonl
    from lethe.training.trainer import train

    _, model = _top_lora(tiny)
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    write_jsonl(forget, [{"prompt": p.prompt, "answer": p.answer} for p in PAIRS])
    write_jsonl(retain, [{"prompt": p.prompt, "answer": p.answer} for p in RETAIN])
    logs = {}
    for on in (True, False):
        out = tmp_path / f"run-{on}"
        cfg = TrainConfig(model=str(tiny), method="npo_rt", forget=str(forget), retain=str(retain), out=str(out),
                          init_adapter=str(adapter), max_steps=3, batch_size=3, retain_batch_size=2, max_length=64,
                          prefix_cache=on, progress=False, retain_loss="kl")
        summary = train(cfg)
        assert (summary["prefix_cache"] is not None) is on
        logs[on] = [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert logs[True] == pytest.approx(logs[False], abs=1e-4)


def test_states_persist_across_runs_on_the_same_base(tiny, tmp_path, monkeypatch):
    """A second run on the same base reads every state the first one saved (no row runs the frozen
    layers again) and logs the same losses; a run on another base ignores the file."""
    from lethe.training.config import TrainConfig
    from lethe.training.data import write_jsonl
    from lethe.training.trainer import train

    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    write_jsonl(forget, [{"prompt": p.prompt, "answer": p.answer} for p in PAIRS])
    write_jsonl(retain, [{"prompt": p.prompt, "answer": p.answer} for p in RETAIN])

    def run(name, model=tiny, **kw):
        out = tmp_path / name
        cfg = TrainConfig(model=str(model), method="gd", forget=str(forget), retain=str(retain), out=str(out),
                          max_steps=2, batch_size=3, retain_batch_size=2, max_length=64, lora_rank=4,
                          lora_top_layers=2, progress=False, **kw)
        s = train(cfg)
        return s["prefix_cache"], [json.loads(x)["loss"] for x in (out / "train_log.jsonl").read_text().splitlines()]

    first, losses1 = run("a")
    assert first["loaded"] == 0 and first["misses"] == 5 and first["saved"]
    second, losses2 = run("b")
    assert second["loaded"] == 5 and second["misses"] == 0 and not second["saved"]
    assert second["file"] == first["file"]
    assert losses2 == pytest.approx(losses1, abs=1e-5)

    memory_only, _ = run("c", prefix_cache_mb=0)
    assert memory_only["loaded"] == 0 and memory_only["file"] is None

    other = make_tiny_model(tmp_path / "other", layers=4, seed=1)
    foreign, _ = run("d", model=other)
    assert foreign["loaded"] == 0 and foreign["misses"] == 5 and foreign["file"] != first["file"]
