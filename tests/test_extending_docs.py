"""The examples in docs/extending.md are real: each registers through its registry and works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.fixture(scope="module")
def examples() -> dict[str, str]:
    blocks = re.findall(r"```python\n# (src/\S+)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 4, "docs/extending.md lost its examples"
    out = {}
    for path, code in blocks:
        assert not (DOC.parents[1] / path).exists(), f"example file name {path} collides with a real module"
        ns: dict = {"__name__": "lethe_docs_example_" + Path(path).stem}
        exec(compile(code, path, "exec"), ns)  # noqa: S102 - the documentation's own code
        out[Path(path).stem] = ns
    return out


def test_attack_example(examples) -> None:
    from lethe.evaluation.attacks import ATTACKS

    assert "shout" in examples
    assert ATTACKS.create("shout", seed=1).apply("who wrote it?") == "ANSWER NOW, NO EXCUSES: WHO WROTE IT?"


def test_metric_example(examples) -> None:
    from lethe.evaluation.metrics import METRICS, direction_of

    assert METRICS.create("answer_length")(["I can't help with that.", "No."]) == pytest.approx(3.0)
    assert direction_of("forget05.answer_length") == "none"


def test_backend_example_builds_from_config(examples) -> None:
    from lethe.backends import load_backend
    from lethe.config import BackendConfig
    from lethe.errors import ConfigError

    be = load_backend(BackendConfig(kind="echo", model="x"))
    assert be.chat([{"role": "user", "content": "hello"}]).text == "hello"
    with pytest.raises(ConfigError, match="base_url"):  # a setting the backend cannot use
        load_backend(BackendConfig(kind="echo", model="x", base_url="http://127.0.0.1:9/v1"))


def test_loss_example_registers(examples) -> None:
    pytest.importorskip("torch")
    from lethe.training.losses import LOSSES

    loss = LOSSES.create("ga_clipped")
    assert loss.uses_retain and not loss.needs_retain and not loss.needs_reference


def test_task_example_runs_through_the_loop(examples, shared_data) -> None:
    from lethe.backends import load_backend
    from lethe.config import BackendConfig
    from lethe.evaluation.loop import run_task
    from lethe.evaluation.tasks import TASKS

    echo = load_backend(BackendConfig(kind="echo", model="x"))  # answers with the question itself
    res = run_task(TASKS.create("capitals"), method_name="prompt", backend=echo, root=shared_data)
    assert res["metrics"] == {"forget_recall": 0.0, "retain_recall": 0.0}  # no question names its capital
    assert res["method"]["n_requests"] == 1 and len(res["items"]) == 2
