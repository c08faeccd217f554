"""The installed distribution is Lethe's own (the name ``lethe`` on the package index is another project)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import lethe


def test_installed_distribution_is_ours() -> None:
    dist = metadata.distribution(lethe.DISTRIBUTION)
    assert dist.metadata["Name"] == "lethe-unlearn"
    assert dist.version == lethe.__version__
    assert "forget" in (dist.metadata["Summary"] or "").lower()
    # the console script and the import name stay `lethe`
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts.get("lethe") == "lethe.cli.main:main"
    # the installed `lethe` package is this source tree, not someone else's
    assert Path(lethe.__file__).resolve().parent.name == "lethe"
    assert (Path(lethe.__file__).resolve().parent / "guard" / "detector.py").exists()


def test_no_foreign_lethe_distribution_installed() -> None:
    names = {d.metadata["Name"].lower() for d in metadata.distributions() if d.metadata["Name"]}
    assert "lethe" not in names, "the unrelated 'lethe' distribution is installed alongside lethe-unlearn"
