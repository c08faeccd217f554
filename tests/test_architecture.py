"""Layers point one way (docs/architecture.md): a lower layer never imports a higher one.

Every ``import lethe.x`` / ``from lethe.x import`` in ``src/lethe`` is read with ``ast`` (module level
and inside functions alike, since a lazy import is still a dependency) and checked against the layer
table below; the guard must also import without torch or peft installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lethe"

# (prefix, layer): the longest matching prefix decides; a module may import its own layer or lower.
LAYERS: list[tuple[str, int]] = [
    ("lethe.errors", 0), ("lethe.text", 0), ("lethe.registry", 0), ("lethe.jsonl", 0),
    ("lethe.config", 1), ("lethe.expand_config", 1), ("lethe.intervention_config", 1), ("lethe.packs", 1),
    ("lethe.backends", 2), ("lethe.store", 2), ("lethe.provenance", 2),
    ("lethe.guard", 3),
    # measures and probes: pure functions on data, text transforms (the guard's receipts use the attacks)
    ("lethe.evaluation.metrics", 3), ("lethe.evaluation.data", 3), ("lethe.evaluation.attacks", 3),
    ("lethe.training", 4),
    ("lethe.evaluation", 5),
    ("lethe.serving", 6),
    ("lethe.cli", 7),
    # command definitions mounted by the CLI are entry points, whatever package they sit in
    ("lethe.evaluation.cli", 7), ("lethe.training.cli", 7), ("lethe.serving.cli", 7),
    ("lethe", 7),  # the package root re-exports the public API
]


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("lethe")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("lethe"):
            names = {a.name for a in node.names}
            # `from lethe import __version__` reads metadata only; any other root name is the public API
            if node.module != "lethe":
                out.append((node.lineno, node.module))
            else:
                out.append((node.lineno, "lethe" if names <= {"__version__", "DISTRIBUTION"} else "lethe.cli"))
    return out


def test_layer_table_covers_every_module() -> None:
    for path in SRC.rglob("*.py"):
        layer(module_name(path))  # raises ValueError (max of nothing) for an unplaced module


def test_no_lower_layer_imports_a_higher_one() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        mod = module_name(path)
        if mod == "lethe":
            continue
        for line, target in imports(path):
            if target == "lethe":  # the root's names load lazily: `import lethe` (its version) pulls in no layer
                continue
            if layer(target) > layer(mod):
                bad.append(f"{path.relative_to(SRC.parent)}:{line}: {mod} (layer {layer(mod)}) imports "
                           f"{target} (layer {layer(target)})")
    assert not bad, "\n".join(bad)


def test_guard_imports_without_the_training_stack() -> None:
    """The guard (and the store, backends' ONNX embedder) must not need torch or peft to import."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'peft', 'accelerate'):\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lethe.guard.guard, lethe.guard.detector, lethe.store, lethe.guard.guider\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
