"""An evaluation's guard runs in its own folder under the home, with the home's configuration."""

from __future__ import annotations

from lethe.evaluation.cli import _eval_home


def test_run_home_has_the_homes_guard_yaml_and_policies(tmp_path):
    (tmp_path / "guard.yaml").write_text("guider:\n  kind: none\n", encoding="utf-8")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "mine.yaml").write_text("name: mine\n", encoding="utf-8")
    run = _eval_home(str(tmp_path), "tofu", "dragon")
    assert run.parent == tmp_path / "eval" and run.name.endswith("-tofu-dragon")
    assert (run / "guard.yaml").read_text(encoding="utf-8") == "guider:\n  kind: none\n"
    assert (run / "policies" / "mine.yaml").is_file()
    assert not (run / "store.db").exists()  # the run's store starts empty: the home's own store is untouched


def test_methods_without_context_create_nothing(tmp_path):
    (tmp_path / "guard.yaml").write_text("guider:\n  kind: none\n", encoding="utf-8")
    run = _eval_home(str(tmp_path), "tofu", "none")
    assert not run.exists() and not (tmp_path / "eval").exists()
