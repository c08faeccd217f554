"""How llama.cpp's threads share the CPU with other processes (used by ``lethe.backends.llamacpp``).

llama.cpp's CPU backend (ggml, built with OpenMP on Linux) joins its threads at an
OpenMP barrier after every graph node, hundreds of times per token, so a token is as slow as the
slowest of its threads. Two things go wrong when another busy process shares the cores:

* GNU libgomp's default wait policy spins at those barriers before sleeping, so two processes
  keep stealing each other's time slices. The backend loads llama.cpp with
  ``OMP_WAIT_POLICY=PASSIVE`` unless told otherwise (``wait_policy``). libgomp reads the policy
  once, when it is loaded, so the first llama.cpp model in a process sets it for every later one.
* Even without spinning, more threads than free cores means every barrier waits for a thread
  the scheduler has parked. With ``n_threads`` unset the backend therefore chooses, before each
  call and every half second while streaming, one thread per core not taken by other runnable
  threads (``/proc/loadavg``'s running count minus this process's own), between 1 and the CPUs
  the process may use. A fixed ``n_threads`` turns this off.

Both are set in the ``backend`` section of ``guard.yaml``; ``docs/serving.md`` (Performance) has
the measurements.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Literal

from lethe.errors import BackendError

log = logging.getLogger(__name__)

WaitPolicy = Literal["passive", "spin", "active"]
_POLICIES = ("passive", "spin", "active")
_LOADED_POLICY: list[str] = []  # the policy libgomp was loaded with in this process (first load wins)


def default_threads() -> int:
    """One thread per CPU this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _libgomp_loaded() -> bool:
    try:
        return "/libgomp.so" in Path("/proc/self/maps").read_text()
    except OSError:  # pragma: no cover - no procfs
        return False


def _policy_from_env() -> str:
    env = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
    return env if env in ("passive", "active") else "spin"


def resolve_wait_policy(policy: str | None) -> str:
    """How idle llama.cpp threads wait at a barrier (GNU libgomp's ``OMP_WAIT_POLICY``):

    ``passive``: sleep at once (a futex), giving the core to whoever else wants it;
    ``spin``: libgomp's built-in behaviour when the variable is unset (spin ~300,000 rounds, then sleep);
    ``active``: spin until the barrier opens. ``None`` follows ``OMP_WAIT_POLICY`` when it is set,
    else ``passive``."""
    if policy is None:
        env = os.environ.get("OMP_WAIT_POLICY")
        policy = _policy_from_env() if env else "passive"
    policy = policy.strip().lower()
    if policy not in _POLICIES:
        raise BackendError(f"wait_policy must be one of {', '.join(_POLICIES)}, not {policy!r}")
    return policy


def import_llama_cpp(wait_policy: str | None = None) -> str:
    """Import ``llama_cpp`` with libgomp's wait policy set to ``wait_policy``; returns the policy in force.

    The variable is set only while the shared libraries load and restored afterwards, so OpenMP
    users loaded later (torch ships its own libgomp copy) keep their defaults. libgomp reads it
    once, at load: when llama.cpp is already loaded, the first policy stays and a warning says so."""
    policy = resolve_wait_policy(wait_policy)
    if not _LOADED_POLICY and "llama_cpp" in sys.modules:  # imported directly by someone else
        _LOADED_POLICY.append(_policy_from_env())
    if _LOADED_POLICY:
        if _LOADED_POLICY[0] != policy:
            log.warning("llama.cpp is already loaded with wait_policy=%s in this process; %s is ignored",
                        _LOADED_POLICY[0], policy)
        return _LOADED_POLICY[0]
    if _libgomp_loaded() and _policy_from_env() != policy:
        log.warning("libgomp was loaded before llama.cpp; its wait policy cannot be changed to %s "
                    "in this process", policy)
    before = os.environ.get("OMP_WAIT_POLICY")
    if policy == "spin":
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    try:
        import llama_cpp  # noqa: F401  (loads libllama, libggml-cpu and libgomp)
    finally:
        if before is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
        else:
            os.environ["OMP_WAIT_POLICY"] = before
    _LOADED_POLICY.append(policy)
    return policy


class ThreadGovernor:
    """How many threads the next llama.cpp call should run: the CPUs this process may use minus
    those other runnable threads occupy right now (see the module doc), re-read at most every
    ``interval_s`` seconds. ``fixed`` pins the count instead."""

    def __init__(self, fixed: int | None = None, interval_s: float = 0.5, samples: int = 5) -> None:
        self.cpus = default_threads()
        self.fixed = fixed
        self.interval_s = interval_s
        self.samples = samples
        self._at = -1e9
        self._n = fixed or self.cpus

    @staticmethod
    def _runnable_total() -> int:
        # /proc/loadavg: "1.00 0.80 0.60 RUNNABLE/TOTAL LASTPID"; RUNNABLE includes the reader
        with open("/proc/loadavg", encoding="ascii") as f:
            return int(f.read().split()[3].split("/")[0])

    @staticmethod
    def _runnable_own() -> int:
        n = 0
        for task in os.scandir("/proc/self/task"):
            try:
                with open(f"{task.path}/stat", encoding="ascii", errors="replace") as f:
                    n += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
        return max(1, n)

    def busy_elsewhere(self) -> float:
        """Mean number of runnable threads outside this process over a few short samples."""
        vals = []
        for i in range(self.samples):
            if i:
                time.sleep(0.001)
            vals.append(max(0, self._runnable_total() - self._runnable_own()))
        return sum(vals) / len(vals)

    def threads(self) -> int:
        if self.fixed:
            return self.fixed
        now = time.monotonic()
        if now - self._at >= self.interval_s:
            self._at = now
            try:
                free = self.cpus - self.busy_elsewhere()
            except (OSError, ValueError, IndexError):  # no procfs: use every CPU
                free = self.cpus
            self._n = int(min(self.cpus, max(1, round(free))))
        return self._n
