"""Benchmarks as tasks, registered in ``TASKS``: ``tofu``, ``wmdp``, ``mmlu``, ``muse``, ``continual``.

A new benchmark is one module here with a :class:`Task` subclass registered under its name; the
loop (:func:`lethe.evaluation.loop.run_task`) runs it with any method and attack.
"""

from lethe.evaluation.tasks.base import TASKS, Task
from lethe.registry import import_submodules

import_submodules(__name__)  # every task module registers its class

__all__ = ["TASKS", "Task"]
