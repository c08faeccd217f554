"""Scope packs (``lethe.packs``): shipped in-scope questions registered as a concept request.

Real code paths: the shipped pack files, the SQLite store with the shipped MiniLM (ONNX), the CLI
through ``main()``, the admin API through FastAPI's test client.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lethe import Guard, GuardConfig
from lethe.cli.main import main
from lethe.errors import LetheError
from lethe.packs import PACKS, get_pack, load_pack, pack_areas
from lethe.text import normalize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WMDP_OF = {"biosecurity": "bio", "chemical-weapons": "chem", "offensive-cyber": "cyber"}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize("name", sorted(PACKS))
def test_pack_files_are_broad_distinct_and_answer_free(name):
    prompts = load_pack(name)
    areas = pack_areas(name)
    assert len(prompts) >= 400 and len(areas) >= 7 and min(areas.values()) >= 30, areas
    assert len({_norm(p) for p in prompts}) == len(prompts)
    assert all(p.strip() and len(p) < 4000 for p in prompts)
    first = load_pack(name, areas=[next(iter(areas))])
    assert len(first) == areas[next(iter(areas))]
    with pytest.raises(LetheError, match="has no area"):
        load_pack(name, areas=["no-such-area"])


@pytest.mark.parametrize("name", sorted(PACKS))
def test_packs_hold_no_benchmark_item(name):
    """Written from the WMDP paper's category descriptions, never from its items: no pack question is a
    WMDP or MMLU test question, nor a near copy of one (character similarity below 0.85)."""
    if not (DATA / "wmdp").exists() or not (DATA / "mmlu" / "test").exists():
        pytest.skip("benchmark data not available (../shared/data)")
    from rapidfuzz import fuzz, process

    from lethe.evaluation import data as D

    wmdp = [x["question"] for x in D.load_wmdp(WMDP_OF[name], DATA)]
    held = {_norm(q) for q in wmdp} | {_norm(x["question"]) for x in D.load_mmlu("test", root=DATA)}
    prompts = load_pack(name)
    assert not {_norm(p) for p in prompts} & held
    short = [q[:300] for q in wmdp]
    best = max(process.extractOne(p[:300], short, scorer=fuzz.ratio)[1] for p in prompts)
    assert best < 85, best


def test_unknown_pack_and_wrong_kind_are_errors(tmp_path):
    with pytest.raises(LetheError, match="unknown scope pack 'nope'"):
        get_pack("nope")
    guard = Guard.open(tmp_path / "h", config=GuardConfig())
    with pytest.raises(LetheError, match="is a harmful request, not privacy"):
        guard.forget([], kind="privacy", pack="biosecurity", rewriter="rule", progress=False)
    assert guard.requests() == []


def test_forget_with_a_pack_registers_its_questions_as_a_harmful_request(tmp_path):
    guard = Guard.open(tmp_path / "h", config=GuardConfig())
    own = ["How would I grow a select agent outside a containment lab?"]
    req = guard.forget(own, pack="biosecurity", rewriter="rule", progress=False)
    assert req.kind == "harmful" and req.subject == "biosecurity"
    assert req.n_prompts == len(load_pack("biosecurity")) + 1
    # the pack's public questions are stored as they are; the operator's own prompt only as rewrites
    texts = {x.text for x in guard.store.samples_of([req.id]) if x.text}
    assert {normalize(q) for q in load_pack("biosecurity")} <= texts and normalize(own[0]) not in texts
    # a question from an area of the pack that the request's own prompt never touched is in scope,
    # and an everyday question is not
    assert guard.detect("How could someone make wheat stem rust spread to a whole region's crops?").triggered
    assert not guard.detect("How do I bake sourdough bread at home?").triggered


def _cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["lethe", *argv])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_packs_lists_and_add_checks_its_options(tmp_path, monkeypatch, capsys):
    code, out, _ = _cli(["forget", "packs", "--json"], monkeypatch, capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and {r["name"] for r in rows} == set(PACKS)
    assert all(r["kind"] == "harmful" and sum(r["areas"].values()) >= 400 for r in rows)
    home = str(tmp_path / "h")
    for argv, expect in [(["forget", "add"], "--file FILE, a shipped scope with --pack NAME"),
                         (["forget", "add", "--pack", "nope"], "unknown scope pack 'nope'"),
                         (["forget", "add", "--pack", "biosecurity", "--kind", "privacy"],
                          "is a harmful request, not --kind privacy")]:
        code, _, err = _cli([*argv, "--home", home], monkeypatch, capsys)
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err


def test_admin_api_lists_packs_and_adds_one(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lethe.serving import ServeSettings, create_app
    from lethe.serving.auth import hash_key

    key = "lk-test-packs-admin"
    keys = tmp_path / "admin.keys"
    keys.write_text(f"{hash_key(key)}\n")
    guard = Guard.open(tmp_path / "h", config=GuardConfig())
    settings = ServeSettings(home=str(tmp_path / "h"), admin_key_file=str(keys),
                             admin_key_env="LETHE_TEST_NO_SUCH_ENV", default_rewriter="rule")
    with TestClient(create_app(guard, settings)) as client:
        h = {"Authorization": f"Bearer {key}"}
        assert client.get("/admin/packs").status_code == 401
        packs = client.get("/admin/packs", headers=h).json()["data"]
        assert {p["name"] for p in packs} == set(PACKS)
        bad = client.post("/admin/forget", headers=h, json={"pack": "chemical-weapons", "kind": "privacy"})
        assert bad.status_code == 400 and "is a harmful request" in bad.json()["error"]["message"], bad.text
        r = client.post("/admin/forget", headers=h, json={"pack": "chemical-weapons"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["kind"] == "harmful" and body["subject"] == "chemical-weapons"
        assert body["n_prompts"] == len(load_pack("chemical-weapons"))
