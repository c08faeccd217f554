"""The task interface: what a benchmark asks, what it forgets and how it scores.

A task is built from its options (``TASKS.create("tofu", forget_split="forget05", limit=10)``) and
run by :func:`lethe.evaluation.loop.run_task`, which owns the method, the attack, timing, the
results object and clean-up. A task implements:

- ``load(root, seed)``: read its data (items and forget requests), before the method exists;
- ``setup(method)``: give a method that acts on the context its forget requests (the default
  registers :meth:`targets`; continual tasks add theirs step by step in ``run`` instead);
- ``config()``: its options as recorded under ``config`` in the results;
- ``run(run)``: answer the items with ``run.method`` and write ``run.metrics`` (and ``run.items``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from lethe.registry import Registry

if TYPE_CHECKING:
    from lethe.evaluation.loop import Run
    from lethe.evaluation.methods import ForgetTarget, Method


class Task(ABC):
    name: ClassVar[str] = "base"
    attackable: ClassVar[bool] = True
    """Whether ``--attack`` applies (recorded as ``config.attack``)."""

    def load(self, root: Any, seed: int) -> None:  # noqa: B027 - optional hook
        """Read the task's data."""

    def targets(self) -> list[ForgetTarget]:
        """The forget requests a context method is given before the first item."""
        return []

    def setup(self, method: Method) -> None:
        method.setup(self.targets())

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The task's options, as recorded in the results."""

    @abstractmethod
    def run(self, run: Run) -> None:
        """Answer the items and write the metrics."""


TASKS: Registry[Task] = Registry("task")
