"""Export a PEFT LoRA adapter as a GGUF LoRA adapter that llama.cpp loads on top of the GGUF base.

Follows the layout of llama.cpp's ``convert_lora_to_gguf.py``: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and per adapted weight ``W`` (GGUF name, e.g.
``blk.3.attn_q.weight``) two tensors ``W.lora_a`` (rank x in) and ``W.lora_b`` (out x rank).
llama.cpp scales by ``alpha / rank`` like PEFT. Supports Llama/Qwen2-style module names.
Use it with ``llama_cpp.Llama(model_path=BASE.gguf, lora_path=ADAPTER.gguf)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lethe.errors import LetheError

_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_NAME = re.compile(r"layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight$")


def export_lora_gguf(adapter_dir: str | Path, out_file: str | Path, *, arch: str = "qwen2") -> Path:
    """Write ``out_file`` (GGUF LoRA) from a PEFT adapter folder; returns the path."""
    try:
        import gguf
    except ImportError:
        raise LetheError("GGUF export needs the 'gguf' package: pip install gguf") from None
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, object]] = {}
    for name, t in weights.items():
        m = _NAME.search(name)
        if not m or m.group(2) not in _MODULES:
            raise LetheError(f"cannot map adapter tensor '{name}' to a GGUF name")
        dest = f"blk.{m.group(1)}.{_MODULES[m.group(2)]}.weight"
        pairs.setdefault(dest, {})[m.group(3)] = t.float().numpy()
    out_file = Path(out_file)
    writer = gguf.GGUFWriter(str(out_file), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(cfg.get("lora_alpha", cfg.get("r", 8))))
    for dest in sorted(pairs):
        ab = pairs[dest]
        writer.add_tensor(dest + ".lora_a", ab["A"])  # (rank, in)
        writer.add_tensor(dest + ".lora_b", ab["B"])  # (out, rank)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file
