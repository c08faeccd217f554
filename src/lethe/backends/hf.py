"""``transformers`` backend: a hub id, a local folder, or a GGUF through ``gguf_file=``."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Generation, Message, Timer
from lethe.backends.chat_format import render
from lethe.errors import BackendError


@BACKENDS.register("hf")
class HFBackend(ChatBackend):
    name = "hf"
    supports_prefill = True
    supports_logprobs = True

    def __init__(
        self,
        model: str,
        *,
        gguf_file: str | None = None,
        adapter: str | None = None,
        seed: int = 0,
        device: str | None = None,
        **_: object,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model_spec = model
        self.seed = seed
        self._lock = threading.Lock()
        kw = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tok = AutoTokenizer.from_pretrained(model, **kw)
            self.model = AutoModelForCausalLM.from_pretrained(model, **kw)
        except OSError as exc:
            raise BackendError(f"transformers could not load '{model}': {str(exc).splitlines()[0]}") from None
        if adapter:
            from peft import PeftModel

            if not Path(adapter).exists():
                raise BackendError(f"adapter folder not found: {adapter}")
            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()

    @classmethod
    def from_model(cls, model, tokenizer, name: str = "in-memory") -> HFBackend:
        """Wrap an already loaded model (used by the trainer and tests)."""
        import torch

        self = cls.__new__(cls)
        self.torch = torch
        self.model_spec = name
        self.seed = 0
        self._lock = threading.Lock()
        self.tok = tokenizer
        self.model = model
        self.device = next(model.parameters()).device
        return self

    def format_prompt(self, messages: Sequence[Message], prefill: str | None = None) -> str:
        return render(self.tok, messages, prefill)  # the prompts training used (backends.chat_format)

    def generate(self, messages: Sequence[Message], gen: Generation) -> ChatResult:
        torch = self.torch
        max_tokens, temperature = gen.max_tokens, gen.temperature
        prompt = self.format_prompt(messages, gen.prefill)
        enc = self.tok(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        gen_kw = {"max_new_tokens": max_tokens, "pad_token_id": self.tok.pad_token_id or self.tok.eos_token_id}
        if temperature > 0:
            torch.manual_seed(self.seed)
            gen_kw.update(do_sample=True, temperature=temperature, top_p=0.9)
        else:
            gen_kw.update(do_sample=False)
        with self._lock, Timer() as t, torch.no_grad():
            out = self.model.generate(**enc, **gen_kw)
        new = out[0, enc["input_ids"].shape[1]:]
        text = self.tok.decode(new, skip_special_tokens=True)
        for s in gen.stop:
            text = text.split(s)[0]
        return ChatResult(text=text, prompt_tokens=int(enc["input_ids"].shape[1]),
                          completion_tokens=int(new.shape[0]), latency_s=t.elapsed)

    GREEDY_BATCH = 8  # conversations generated together by chat_many

    def chat_many(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int = 200,
                  prefills: Sequence[str | None] | None = None) -> list[str]:
        """Greedy answers generated ``GREEDY_BATCH`` conversations at a time: left-padded prompts in
        one ``generate`` call (the attention mask hides the padding, positions start at each prompt's
        first token), so a batch costs about one answer's decoding steps on a GPU."""
        torch = self.torch
        pre = list(prefills) if prefills is not None else [None] * len(conversations)
        prompts = [self.format_prompt(m, p) for m, p in zip(conversations, pre, strict=True)]
        pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        eos_cfg = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = set(eos_cfg if isinstance(eos_cfg, list) else [eos_cfg]) | {self.tok.eos_token_id}
        eos.discard(None)
        out: list[str] = []
        for i in range(0, len(prompts), self.GREEDY_BATCH):
            ids = [self.tok(p, add_special_tokens=False)["input_ids"] for p in prompts[i:i + self.GREEDY_BATCH]]
            width = max(len(x) for x in ids)
            input_ids = torch.tensor([[pad_id] * (width - len(x)) + x for x in ids], device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.device)
            with self._lock, torch.no_grad():
                gen = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens,
                                          do_sample=False, pad_token_id=pad_id)
            for row in gen[:, width:].tolist():  # a finished row is padded: cut it at its end
                cut = next((k for k, t in enumerate(row) if t in eos), len(row))
                out.append(self.tok.decode(row[:cut], skip_special_tokens=True))
        return out

    def _logprobs(self, ids: list[int]):
        torch = self.torch
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0].float()
        return torch.log_softmax(logits, dim=-1)

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        cand = [self.tok(c, add_special_tokens=False)["input_ids"][0] for c in candidates]
        with self._lock:
            lp = self._logprobs(ids)[-1]
        return [float(lp[c]) for c in cand]

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        p_ids = self.tok(prompt, add_special_tokens=False)["input_ids"]
        full = self.tok(prompt + continuation, add_special_tokens=False)["input_ids"]
        k = 0
        while k < min(len(p_ids), len(full)) and p_ids[k] == full[k]:
            k += 1
        if k == len(full):
            return 0.0, 0
        with self._lock:
            lp = self._logprobs(full)
        total = sum(float(lp[i - 1, full[i]]) for i in range(max(k, 1), len(full)))
        return total, len(full) - max(k, 1)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_spec}
