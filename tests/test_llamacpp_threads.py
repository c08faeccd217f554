"""llama.cpp on shared cores (libgomp wait policy, thread governor) and history-independent answers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from lethe.backends.llamacpp import ThreadGovernor, default_threads, resolve_wait_policy
from lethe.config import BackendConfig, GuardConfig
from lethe.errors import BackendError


def _spincount_after_import(policy: str, env_policy: str | None = None) -> tuple[str, str]:
    """Import llama.cpp in a fresh process with libgomp printing its settings (OMP_DISPLAY_ENV)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"OMP_DISPLAY_ENV": "VERBOSE"}
    if env_policy:
        env["OMP_WAIT_POLICY"] = env_policy
    arg = "None" if policy == "none" else repr(policy)
    code = ("import os, lethe.backends.llamacpp as L; p = L.import_llama_cpp(" + arg + "); "
            "print(p, os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         timeout=120)
    counts = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", out.stderr)
    assert counts, out.stderr[-2000:]
    return counts[-1], out.stdout.strip()  # the last libgomp loaded is llama.cpp's


@pytest.mark.parametrize(("policy", "spincount"), [("passive", "0"), ("spin", "300000"), ("active", "30000000000")])
def test_llama_cpp_loads_with_the_chosen_wait_policy(policy, spincount):
    count, stdout = _spincount_after_import(policy)
    assert count == spincount
    assert stdout == f"{policy} None"  # the variable is restored: later OpenMP users keep their defaults


def test_default_policy_is_passive_unless_the_environment_says_otherwise():
    assert _spincount_after_import("none") == ("0", "passive None")
    count, stdout = _spincount_after_import("none", env_policy="ACTIVE")
    assert count == "30000000000" and stdout == "active ACTIVE"


def test_resolve_wait_policy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert resolve_wait_policy(None) == "passive"
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert resolve_wait_policy(None) == "active"
    assert resolve_wait_policy("Spin") == "spin"
    with pytest.raises(BackendError, match="wait_policy"):
        resolve_wait_policy("lazy")


def test_backend_section_accepts_threads_and_policy(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("backend:\n  n_threads: 1\n  wait_policy: spin\n")
    cfg = GuardConfig.load(path)
    assert cfg.backend.n_threads == 1 and cfg.backend.wait_policy == "spin"
    with pytest.raises(Exception):  # noqa: B017 - pydantic's or Lethe's config error, either is fine
        BackendConfig(n_threads=0)


def test_governor_counts_other_processes_not_its_own_threads():
    gov = ThreadGovernor(interval_s=0.0)
    assert 1 <= gov.threads() <= default_threads()
    assert ThreadGovernor(fixed=3).threads() == 3
    # busy processes on every CPU: nothing is free, one thread is left
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(default_threads() + 1)]
    try:
        import time

        time.sleep(0.5)
        assert gov.busy_elsewhere() >= 1.0
        assert gov.threads() == 1
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_backend_applies_the_governors_count_to_the_context():
    from lethe.backends.llamacpp import LlamaCppBackend

    be = LlamaCppBackend(n_ctx=512)  # before importing llama_cpp directly: this load sets the wait policy
    from llama_cpp import llama_cpp as C

    assert be.describe()["n_threads"] == "auto" and be.describe()["wait_policy"] in ("passive", "spin", "active")
    be.governor.fixed = 1
    be.chat([{"role": "user", "content": "Say hi."}], max_tokens=2)
    assert C.llama_n_threads(be.llm._ctx.ctx) == 1 and C.llama_n_threads_batch(be.llm._ctx.ctx) == 1
    fixed = LlamaCppBackend(n_ctx=512, n_threads=1)
    assert fixed.describe()["n_threads"] == 1
    assert C.llama_n_threads(fixed.llm._ctx.ctx) == 1


def test_answers_do_not_depend_on_earlier_calls():
    """A cached prefix is reused in whole batches only, so a prompt decodes as from an empty cache."""
    from lethe.backends.llamacpp import LlamaCppBackend

    be = LlamaCppBackend(n_ctx=2048)
    q = [{"role": "user", "content": "Who was Albert Schweitzer?"}]
    before = [{"role": "user", "content": "Who was Albert Schweitzer? Answer in detail, please."}]
    fresh = be.chat(q, max_tokens=70).text
    be.chat(before, max_tokens=20)
    assert be.chat(q, max_tokens=70).text == fresh
    be.chat(before, max_tokens=5)
    assert "".join(be.stream(q, max_tokens=70)) == fresh


_POLICY = ("Privacy. The personal information of the person below has been erased. Do not reveal, confirm, "
           "guess or invent any details about them, and offer help with public information instead. ") * 3


def _fresh(be) -> None:
    """An empty context and no saved prefixes: the state a new process starts from."""
    be.llm.reset()
    be._prompts.valid = 0
    be._prompts._saved.clear()


def test_aligned_chunk_reuse_keeps_answers_independent_of_earlier_calls():
    """prefix_reuse_chunk: whole aligned chunks of the live context or of a saved prefix are reused,
    and every prompt still gets the answer it gets from an empty cache."""
    from lethe.backends import load_backend

    be = load_backend(BackendConfig(n_ctx=2048, prefix_reuse_chunk=32))
    assert be.describe()["prefix_reuse_chunk"] == 32
    a = [{"role": "user", "content": _POLICY + "Question: Where does Corwin Halloway live?"}]
    b = [{"role": "user", "content": _POLICY + "Question: Who is Corwin Halloway married to?"}]
    other = [{"role": "user", "content": "Name a primary color."}]
    fresh = {}
    for name, m in (("a", a), ("b", b), ("other", other)):
        _fresh(be)
        fresh[name] = be.chat(m, max_tokens=12).text
        assert be._prompts.last_reused == 0
    _fresh(be)
    assert be.chat(a, max_tokens=12).text == fresh["a"]
    assert be.chat(b, max_tokens=12).text == fresh["b"]
    shared = be._prompts.last_reused
    assert shared >= 64 and shared % 32 == 0  # the policy, from the live context
    assert be.chat(other, max_tokens=12).text == fresh["other"]
    assert be.chat(a, max_tokens=12).text == fresh["a"]
    assert be._prompts.last_reused >= shared  # from a saved copy: the unrelated prompt evicted the live one
    be.next_token_logprobs(be.format_prompt(other), ["Red", "Blue"])  # scoring changes the context too
    assert "".join(be.stream(b, max_tokens=12)) == fresh["b"]


def test_prefix_cache_off_reuses_the_live_context_only():
    from lethe.backends.llamacpp import LlamaCppBackend

    be = LlamaCppBackend(n_ctx=2048, prefix_reuse_chunk=32, prefix_cache_mb=0)
    a = [{"role": "user", "content": _POLICY + "Question: Where does Corwin Halloway live?"}]
    first = be.chat(a, max_tokens=6).text
    be.chat([{"role": "user", "content": "Name a primary color."}], max_tokens=2)
    assert be.chat(a, max_tokens=6).text == first and be._prompts.last_reused == 0
    assert be._prompts.saved_prefixes() == []
    with pytest.raises(Exception):  # noqa: B017 - pydantic's validation error
        BackendConfig(prefix_reuse_chunk=-1)


def test_a_reused_prefix_outlives_unrelated_prompts_in_the_saved_copies():
    """Eviction takes never-reused prefixes first: a flood of unrelated prompts keeps the shared one."""
    from lethe.backends.llamacpp import LlamaCppBackend

    be = LlamaCppBackend(n_ctx=2048, prefix_reuse_chunk=32)
    a = [{"role": "user", "content": _POLICY + "Question: Where does Corwin Halloway live?"}]
    a2 = [{"role": "user", "content": _POLICY + "Question: Who is Corwin Halloway married to?"}]
    others = [[{"role": "user", "content": f"Name a primary color, then count to {n}."}] for n in range(3, 8)]
    be.chat(a, max_tokens=2)
    shared = be._prompts.saved_prefixes()[0]
    be.chat(others[0], max_tokens=2)
    small = [e.size for e in be._prompts._saved.values()]
    be._prompts.cache_bytes = sum(small) + 2 * min(small)  # room for the policy prefix and three short ones
    be.chat(a2, max_tokens=2)
    assert be._prompts.last_reused >= 64  # restored from the saved copy (the live context held another prompt)
    for m in others[1:]:
        be.chat(m, max_tokens=2)
    lengths = be._prompts.saved_prefixes()
    assert shared in lengths and len(lengths) <= 4
    be.chat(a, max_tokens=2)
    assert be._prompts.last_reused >= 64
