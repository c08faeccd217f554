"""Generation-level scoring shared by TOFU, MUSE, continual and ``lethe eval score``.

Over ``{query, generated_response, ground_truth}`` records: ROUGE-L, KFR / KRR, CS and RQ (DRAGON's
metrics, :mod:`lethe.evaluation.metrics.dragon`), with pluggable components (NLI, refusal
classifier, gibberish detector, entity extractor): offline defaults, ``hub:<id>`` for the upstream
models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lethe.backends.base import ChatBackend
from lethe.errors import ConfigError
from lethe.evaluation import data as D
from lethe.evaluation.loop import versions
from lethe.evaluation.metrics import METRICS
from lethe.evaluation.metrics.entities import LLMEntityExtractor, RuleEntityExtractor
from lethe.evaluation.metrics.fluency import HubGibberishDetector, RuleGibberishDetector
from lethe.evaluation.metrics.nli import HeuristicNLI, HubNLI
from lethe.evaluation.metrics.refusal import REFUSALS, EmbeddingRefusalClassifier, HubRefusalClassifier
from lethe.evaluation.metrics.rouge import rouge_l

_ds = METRICS.create("ds")
_kfr_krr = METRICS.create("kfr_krr")
_cs = METRICS.create("cs")
_rq = METRICS.create("rq")


def components(embedder, templates: Sequence[str], nli: str = "heuristic", refusal: str = "embedding",
               gibberish: str = "rule", extractor: str = "rule", backend: ChatBackend | None = None) -> dict:
    """The pluggable metric components (offline defaults; ``hub:<id>`` loads the upstream model)."""
    comp: dict[str, Any] = {}
    comp["nli"] = HubNLI(nli[4:]) if nli.startswith("hub:") else HeuristicNLI(embedder)
    comp["refusal"] = (HubRefusalClassifier(refusal[4:]) if refusal.startswith("hub:")
                       else EmbeddingRefusalClassifier(embedder, templates))
    comp["gibberish"] = HubGibberishDetector(gibberish[4:]) if gibberish.startswith("hub:") else RuleGibberishDetector()
    if extractor == "llm":
        if backend is None:
            raise ConfigError("--extractor llm needs a model backend")
        comp["extractor"] = LLMEntityExtractor(backend)
    else:
        comp["extractor"] = RuleEntityExtractor()
    return comp


def describe_components(comp: dict) -> dict:
    return {k: getattr(v, "name", type(v).__name__) for k, v in comp.items()} | {"embedder": "all-MiniLM-L6-v2"}


def scoring_setup(root, backend: ChatBackend | None = None, comp_opts: dict | None = None,
                  result: dict | None = None) -> tuple[Any, list[str], dict]:
    """(fp32 embedder, refusal templates, components) for scoring a task's generations; the components'
    names go into ``result["components"]`` when a result is given."""
    from lethe.backends import get_embedder

    emb = get_embedder(quantize="none")
    templates = D.load_refusal_templates(root)
    comp = components(emb, templates, backend=backend, **(comp_opts or {}))
    if result is not None:
        result["components"] = describe_components(comp)
    return emb, templates, comp


def score_records(records: Sequence[dict], split: str, embedder, templates: Sequence[str], comp: dict) -> dict:
    """Generation-level metrics over ``{query, generated_response, ground_truth}`` records."""
    if not records:
        return {"n": 0}
    rl = [rouge_l(r["ground_truth"], r["generated_response"]) for r in records]
    out: dict[str, Any] = {"n": len(records), "rougeL_recall": float(np.mean([x["recall"] for x in rl])),
                           "rougeL_f1": float(np.mean([x["f1"] for x in rl]))}
    kr = _kfr_krr(records, split, embedder, comp["extractor"], comp["nli"])
    out["kfr" if split == "forget" else "krr"] = kr.rate
    if split == "forget":
        out["cs"] = _cs([r["query"] for r in records], [r["generated_response"] for r in records], embedder)
        rq = _rq([r["generated_response"] for r in records], templates, embedder, comp["refusal"], comp["gibberish"])
        out.update({f"rq_{k}" if k != "rq" else "rq": v for k, v in rq.items() if not isinstance(v, str)})
    return out


def load_generations(path: str | Path) -> list[dict]:
    """A JSON list (or JSONL) of ``{query, generated_response, ground_truth}`` records."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"generations file not found: {p}")
    text = p.read_text(encoding="utf-8").strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    if isinstance(rows, dict):
        rows = rows.get("items") or rows.get("records") or []
    for i, r in enumerate(rows):
        missing = [k for k in ("query", "generated_response", "ground_truth") if k not in r]
        if missing:
            raise ConfigError(f"{p}: record {i} lacks {', '.join(missing)}")
    return rows


def score_generations(path: str | Path, split: str, root=None, retain_path: str | Path | None = None,
                      comp_opts: dict | None = None, templates_path: str | Path | None = None) -> dict:
    """``lethe eval score``: the generation-level metrics of existing generations."""
    from lethe.backends import get_embedder

    if split not in ("forget", "retain"):
        raise ConfigError("--split must be forget or retain")
    recs = load_generations(path)
    if templates_path:
        templates = [s.strip() for s in Path(templates_path).read_text().splitlines() if s.strip()]
    else:
        try:
            templates = D.load_refusal_templates(root)
        except D.DataError:
            templates = list(REFUSALS)
    emb = get_embedder(quantize="none")
    comp = components(emb, templates, **(comp_opts or {}))
    m = {split: score_records(recs, split, emb, templates, comp)}
    if retain_path and split == "forget":
        m["retain"] = score_records(load_generations(retain_path), "retain", emb, templates, comp)
        m["ds"] = _ds(m["forget"]["rougeL_recall"], m["retain"]["rougeL_recall"])
    return {"task": "score", "config": {"generations": str(path), "split": split, "retain_generations":
                                        str(retain_path) if retain_path else None},
            "versions": versions(), "components": describe_components(comp), "metrics": m}
