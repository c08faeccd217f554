"""Benchmark loaders: a local folder in the layout of ``shared/data`` or, online, the hub.

Local layout (``--data DIR`` or ``LETHE_DATA``)::

    tofu/<split>.jsonl             wmdp/wmdp-<bio|chem|cyber>.json
    mmlu/<test|dev>/<subject>_<split>.csv   (header question,choice0..3,answer)
    muse/<news|books>/<knowmem|verbmem|privleak>/<file>.json
    dragon/synthetic_wmdp_<subset>.csv, dragon/unlearn_store_wmdp.json
    jailbreak/gptfuzz/GPTFuzzer.csv

``--data hf`` reads the same splits from the hub datasets (``locuslab/TOFU``, ``cais/wmdp``,
``cais/mmlu``, ``muse-bench/MUSE-News|Books``); it needs ``pip install datasets`` and a
connection. Every item is a plain dict; multiple-choice items are
``{"id", "question", "choices", "answer", "subject"}``.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lethe.errors import LetheError


class DataError(LetheError):
    pass


TOFU_SPLITS = [
    "forget01", "forget05", "forget10", "forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
    "retain90", "retain95", "retain99", "retain_perturbed", "real_authors", "real_authors_perturbed",
    "world_facts", "world_facts_perturbed", "holdout01", "holdout05", "holdout10", "full",
]
WMDP_SUBSETS = ["bio", "chem", "cyber"]
WMDP_SUBJECT = {"bio": "biology", "chem": "chemistry", "cyber": "computer security"}
MUSE_FILES = {
    ("news", "knowmem", "forget_qa"), ("news", "knowmem", "retain_qa"), ("news", "knowmem", "forget_qa_icl"),
    ("news", "knowmem", "retain_qa_icl"), ("books", "knowmem", "forget_qa"), ("books", "knowmem", "retain_qa"),
    ("books", "knowmem", "forget_qa_icl"), ("books", "knowmem", "retain_qa_icl"), ("news", "verbmem", "forget"),
    ("news", "privleak", "forget"), ("news", "privleak", "holdout"), ("news", "privleak", "retain"),
}
HUB = {"tofu": "locuslab/TOFU", "wmdp": "cais/wmdp", "mmlu": "cais/mmlu",
       "muse-news": "muse-bench/MUSE-News", "muse-books": "muse-bench/MUSE-Books"}


def data_root(root: str | os.PathLike[str] | None = None) -> Path | str:
    """Resolve the data location: argument, ``LETHE_DATA``, then ``./data`` or ``../shared/data``.

    Returns the string ``"hf"`` for hub mode."""
    raw = root or os.environ.get("LETHE_DATA") or os.environ.get("LETHE_SHARED_DATA")
    if raw == "hf":
        return "hf"
    if raw:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise DataError(f"data folder not found: {path} (pass --data DIR, or --data hf when online)")
        return path
    for cand in (Path.cwd() / "data", Path.cwd().parent / "shared" / "data"):
        if (cand / "tofu").is_dir() or (cand / "wmdp").is_dir() or (cand / "mmlu").is_dir():
            return cand
    raise DataError("no benchmark data: pass --data DIR (shared/data layout) or set LETHE_DATA; --data hf for the hub")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"missing {what}: {path} not found")
    return path


def _hub(dataset: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError("--data hf needs the 'datasets' package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as exc:  # noqa: BLE001 - hub errors vary
        raise DataError(f"cannot load hub dataset {dataset}/{config} split {split}: {str(exc).splitlines()[0]}") from None
    return [dict(r) for r in ds]


# -- TOFU ---------------------------------------------------------------------------------
def load_tofu(split: str, root: Path | str | None = None) -> list[dict]:
    """One TOFU split (``forget05_perturbed``, ``retain_perturbed``, ``real_authors_perturbed`` ...)."""
    if split not in TOFU_SPLITS:
        raise DataError(f"unknown TOFU split '{split}' (known: {', '.join(TOFU_SPLITS)})")
    root = data_root(root)
    if root == "hf":
        rows = _hub(HUB["tofu"], split, "train")
    else:
        path = _need(Path(root) / "tofu" / f"{split}.jsonl", f"TOFU split '{split}'")
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, r in enumerate(rows):
        r.setdefault("id", f"{split}-{i}")
    return rows


def load_refusal_templates(root: Path | str | None = None) -> list[str]:
    """TOFU's 100 refusal sentences (``tofu/idontknow.jsonl``: one bare string a line)."""
    root = data_root(root)
    if root == "hf":
        from lethe.evaluation.metrics.refusal import REFUSALS

        return list(REFUSALS)
    path = _need(Path(root) / "tofu" / "idontknow.jsonl", "TOFU refusal templates")
    return [s.strip() for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


def tofu_author_groups(rows: Sequence[dict], per_author: int = 20) -> list[list[dict]]:
    """TOFU has 20 consecutive questions per fictitious author."""
    return [list(rows[i : i + per_author]) for i in range(0, len(rows), per_author)]


# -- multiple choice -------------------------------------------------------------------------
def _mc(question: str, choices: Sequence[str], answer: Any, subject: str, id_: str) -> dict:
    if isinstance(answer, str) and answer.strip().upper() in "ABCD" and answer.strip():
        answer = "ABCD".index(answer.strip().upper())
    return {"id": id_, "question": question, "choices": list(choices), "answer": int(answer), "subject": subject}


def load_wmdp(subset: str, root: Path | str | None = None) -> list[dict]:
    """WMDP multiple-choice questions (bio, chem, cyber). Never copy these into the repo."""
    if subset not in WMDP_SUBSETS:
        raise DataError(f"unknown WMDP subset '{subset}' (known: bio, chem, cyber)")
    root = data_root(root)
    if root == "hf":
        rows = _hub(HUB["wmdp"], f"wmdp-{subset}", "test")
    else:
        path = _need(Path(root) / "wmdp" / f"wmdp-{subset}.json", f"WMDP subset '{subset}'")
        rows = json.loads(path.read_text(encoding="utf-8"))
    return [_mc(r["question"], r["choices"], r["answer"], WMDP_SUBJECT[subset], f"wmdp-{subset}-{i}")
            for i, r in enumerate(rows)]


def mmlu_subjects(root: Path | str | None = None, split: str = "test") -> list[str]:
    root = data_root(root)
    if root == "hf":
        raise DataError("list MMLU subjects from a local folder; with --data hf pass --subjects")
    folder = _need(Path(root) / "mmlu" / split, f"MMLU split '{split}'")
    return sorted(p.name[: -len(f"_{split}.csv")] for p in folder.glob(f"*_{split}.csv"))


def load_mmlu(split: str = "test", subjects: Sequence[str] | None = None, root: Path | str | None = None) -> list[dict]:
    """MMLU ``test`` or ``dev`` (5 demonstrations per subject) questions."""
    if split not in ("test", "dev", "validation"):
        raise DataError(f"unknown MMLU split '{split}' (known: test, dev)")
    root = data_root(root)
    subjects = list(subjects) if subjects else mmlu_subjects(root, split)
    items: list[dict] = []
    for subj in subjects:
        if root == "hf":
            rows = _hub(HUB["mmlu"], subj, split)
            for i, r in enumerate(rows):
                items.append(_mc(r["question"], r["choices"], r["answer"], subj, f"mmlu-{subj}-{i}"))
            continue
        path = _need(Path(root) / "mmlu" / split / f"{subj}_{split}.csv", f"MMLU subject '{subj}' ({split})")
        with path.open(encoding="utf-8", newline="") as f:
            for i, r in enumerate(csv.DictReader(f)):
                choices = [r[f"choice{k}"] for k in range(4)]
                items.append(_mc(r["question"], choices, r["answer"], subj, f"mmlu-{subj}-{i}"))
    return items


# -- MUSE ---------------------------------------------------------------------------------
def load_muse(corpus: str, kind: str, split: str, root: Path | str | None = None) -> list[dict]:
    """MUSE files: knowmem ``forget_qa``/``retain_qa`` (+ ``_icl``), verbmem ``forget``,
    privleak ``forget``/``holdout``/``retain``. Rows become dicts (``{"text"}`` for privleak)."""
    if (corpus, kind, split) not in MUSE_FILES:
        known = ", ".join("/".join(k) for k in sorted(MUSE_FILES))
        raise DataError(f"unknown MUSE file {corpus}/{kind}/{split} (known: {known})")
    root = data_root(root)
    if root == "hf":
        rows = _hub(HUB[f"muse-{corpus}"], kind, split)
    else:
        base = Path(root) / "muse" / corpus / kind
        name = split.replace("retain", "retain2") if split.startswith("retain") else split
        path = base / f"{name}.json"
        if not path.exists() and (base / f"{split}.json").exists():
            path = base / f"{split}.json"
        rows = json.loads(_need(path, f"MUSE {corpus}/{kind}/{split}").read_text(encoding="utf-8"))
    out = []
    for i, r in enumerate(rows):
        d = {"text": r} if isinstance(r, str) else dict(r)
        d.setdefault("id", f"muse-{corpus}-{kind}-{split}-{i}")
        out.append(d)
    return out


# -- DRAGON synthetic concept data, jailbreak templates --------------------------------------
def load_dragon_synthetic(subset: str, root: Path | str | None = None) -> list[dict]:
    """DRAGON's synthetic WMDP-style questions (never WMDP's evaluation questions)."""
    root = data_root(root)
    if root == "hf":
        raise DataError("the DRAGON synthetic questions are only available from a local data folder")
    path = _need(Path(root) / "dragon" / f"synthetic_wmdp_{subset}.csv", f"DRAGON synthetic questions '{subset}'")
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, r in enumerate(rows):
        choices = ast.literal_eval(r["choices"]) if r["choices"].startswith("[") else [r["choices"]]
        out.append(_mc(r["question"], choices, r["answer"], WMDP_SUBJECT.get(subset, subset), f"syn-{subset}-{i}"))
    return out


def load_jailbreak_template(name: str = "aim", root: Path | str | None = None) -> str:
    """A GPTFuzz template with its ``[INSERT PROMPT HERE]`` slot (AIM is id 2), read at run time."""
    ids = {"aim": "2", "dr_al": "0", "ucar": "3", "developer_mode": "5", "evil_confidant": "31"}
    root = data_root(root)
    if root == "hf":
        raise DataError("jailbreak templates are read from a local data folder (jailbreak/gptfuzz/GPTFuzzer.csv)")
    path = _need(Path(root) / "jailbreak" / "gptfuzz" / "GPTFuzzer.csv", "jailbreak templates")
    csv.field_size_limit(10**7)
    with path.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            if r["id"] == ids.get(name, name):
                return r["text"]
    raise DataError(f"jailbreak template '{name}' not found in {path}")


# -- sampling -----------------------------------------------------------------------------
def stratified_sample(items: Sequence[dict], n: int | None, seed: int = 0,
                      key: Callable[[dict], Any] | str = "subject") -> list[dict]:
    """Seeded stratified subsample of ``n`` items, proportional per stratum (largest remainder).

    Order of the result follows the original order, so reruns produce the same list."""
    if n is None or n >= len(items):
        return list(items)
    keyf = (lambda d: d.get(key)) if isinstance(key, str) else key
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[keyf(it)].append(i)
    total = len(items)
    quotas = {g: n * len(ix) / total for g, ix in groups.items()}
    alloc = {g: int(q) for g, q in quotas.items()}
    rest = n - sum(alloc.values())
    for g in sorted(groups, key=lambda g: (-(quotas[g] - alloc[g]), str(g)))[:rest]:
        alloc[g] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for g in sorted(groups, key=str):
        ix = list(groups[g])
        rng.shuffle(ix)
        chosen += ix[: alloc[g]]
    return [items[i] for i in sorted(chosen)]
