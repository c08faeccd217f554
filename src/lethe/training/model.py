"""Load the model to unlearn: a hub id, a local folder, or the embedded default GGUF.

The embedded default (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) is dequantised by
``transformers`` (``gguf_file=``, needs the ``gguf`` package) once and saved as an
ordinary HF folder in the cache, so later loads take seconds instead of ~1 minute.
LoRA adapters come from ``peft``; the reference model of NPO/KL/DPO/RMU is the same
base with the adapters disabled, so no second copy is held in memory.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from lethe.config import DEFAULT_MODEL, cache_dir
from lethe.errors import BackendError, ConfigError

DEFAULT_SPECS = {"default", DEFAULT_MODEL}
DEFAULT_HF_DIRNAME = "qwen2.5-coder-0.5b-instruct-hf"


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    spec: str
    path: str  # a folder/hub id that ``from_pretrained`` can load again (adapter base)


def is_default_spec(spec: str | None) -> bool:
    return spec is None or spec in DEFAULT_SPECS


def default_hf_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_HF_DIRNAME


def ensure_default_hf(progress: bool = True) -> Path:
    """The converted HF folder of the embedded default model, converting it once."""
    target = default_hf_dir()
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lethe.backends.default_model import default_gguf_path

    gguf = default_gguf_path()
    if progress:
        print(f"converting {gguf.name} to a transformers folder (once, ~1 min) ...", file=sys.stderr, flush=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as exc:
        raise BackendError(f"loading a GGUF in transformers needs the 'gguf' package: {exc}") from None
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    # the GGUF weights are already dequantised to plain tensors: drop the quantizer marker
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.to(torch.float16)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def resolve_model_path(spec: str | None) -> str:
    """A path or hub id ``from_pretrained`` accepts for a model spec."""
    if is_default_spec(spec):
        return str(ensure_default_hf())
    return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else str(spec)


def load_model(spec: str | None = None, *, dtype: str = "float32", progress: bool = True) -> LoadedModel:
    """Load model + tokenizer; raise :class:`BackendError` (one line) when it cannot be loaded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec) if is_default_spec(spec) else str(spec)
    local = Path(path).expanduser()
    if local.exists():
        path = str(local)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    except (OSError, ValueError, ImportError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackendError(f"could not load model '{spec}': {msg}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model=model, tokenizer=tok, spec=spec or "default", path=path)


LORA_PRESETS: dict[str, list[str] | str] = {
    "all-linear": "all-linear",
    # Llama/Qwen/Mistral module names. Attention-only adapters leave the MLPs, where factual
    # associations are mostly stored (Geva et al. 2021; Meng et al. 2022, ROME), untouched.
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}


def lora_target_modules(spec: str | list[str] | None) -> list[str] | str | None:
    """``--lora-targets``: a preset (all-linear, attention, mlp) or comma-separated module names."""
    if spec is None or isinstance(spec, list):
        return spec
    spec = spec.strip()
    if spec in LORA_PRESETS:
        return LORA_PRESETS[spec]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"empty --lora-targets {spec!r}: use all-linear, attention, mlp or module names")
    return names


def apply_lora(
    model,
    *,
    rank: int = 16,
    alpha: int | None = None,
    dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
    layers: list[int] | None = None,
):
    """Wrap ``model`` with LoRA adapters (peft); only the adapter weights stay trainable."""
    import torch
    from peft import LoraConfig, get_peft_model

    if layers is not None and target_modules in (None, "all-linear"):
        # peft takes layers_to_transform with explicit names only: every linear layer but the head
        target_modules = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                                 if isinstance(m, torch.nn.Linear) and ".layers." in f".{n}"})
    cfg = LoraConfig(
        r=rank,
        lora_alpha=alpha or 2 * rank,
        lora_dropout=dropout,
        target_modules=target_modules or "all-linear",
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:  # peft: "Target modules {...} not found in the base model"
        raise ConfigError(f"LoRA targets {target_modules!r} do not match the model: {str(e).splitlines()[0]}") from e


def continue_lora(model, adapter: str | Path, reference: bool):
    """``model`` with a trained LoRA adapter loaded trainable (unlearning starts from it, e.g. from a
    TOFU target), and, when the loss needs one, a frozen copy with that adapter merged in: the
    reference of NPO/KL/DPO is the starting model, not the bare base the adapter sits on."""
    import copy

    from peft import PeftModel

    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"--init-adapter {path}: not a PEFT adapter folder (no adapter_config.json)")
    ref = None
    if reference:
        ref = PeftModel.from_pretrained(copy.deepcopy(model), str(path)).merge_and_unload()
        ref = ref.eval().requires_grad_(False)
    return PeftModel.from_pretrained(model, str(path), is_trainable=True), ref


def num_layers(model) -> int:
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "num_hidden_layers", 0) or 0)
