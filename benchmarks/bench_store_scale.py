"""The store at scale: 10 k -> 100 k -> 1 M live samples on SQLite and PostgreSQL.

Synthetic vectors with the structure of a forget store, so that recall means something:
topics -> people (one forget request each, 20 prompts) -> prompts -> samples, each level a
Gaussian perturbation of its parent on the unit sphere (384-d). Per prompt the store gets
one rewrite (with a templated text of about 80 characters), three augmentations and one
hard negative (stored, never indexed), as ``Guard.forget`` writes them. The noise levels
give cosine ≈ 0.8 between the samples of one prompt and ≈ 0.5 between prompts of one
person, so the top 10 of a query hold near-ties at the person level: the hard case for
recall. Queries: 70 % paraphrases of a stored prompt, 20 % new questions about a stored
person, 10 % about people never stored.

Per store and size (each measurement in a fresh subprocess, so RSS is the store's):

- **bulk load**: ``add_requests`` (batched ``executemany`` for SQLite, ``COPY`` for
  PostgreSQL), one transaction per 20 k samples, from a store that does not load its index;
- **open, rebuild**: no index file: the index is built from the database (then saved);
- **open, cold**: index file present, evicted from the page cache (``posix_fadvise``);
- **open, warm**: the same again, page cache warm;
- **search**: single queries, k = 10, p50/p99, recall@10 against exact float32 search over
  the generated vectors (strict set overlap; also the ann-benchmarks form, where a returned
  neighbour counts if it is within 1e-3 of the 10th exact similarity; and recall@1);
- **bytes per sample**: database files (SQLite files; PostgreSQL ``pg_total_relation_size``),
  the index file, and the process RSS after open minus before;
- **add / revoke**: latency of ``add_request`` (one request of 20 prompts: 100 samples) and
  ``revoke`` on the loaded store;
- **replica catch-up**: another process (a listening PostgreSQL replica, or a SQLite
  process with its watcher) follows a writer adding such requests at stepped rates; the
  lag from commit to the replica's index holding the request, per rate.

``--variants i8,f16,f32`` also rebuilds the index at ``--variant-size`` with each scalar
type (recall, latency, memory of each).

    eval "$(.ci/start_postgres.sh)"
    python benchmarks/bench_store_scale.py --sizes 10000,100000 --stores sqlite,postgres \\
        --variants i8,f16,f32 --variant-size 100000 --out /tmp/lethe-results/store_scale.json \\
        --notes /tmp/lethe-notes/store-scale.md
    python benchmarks/bench_store_scale.py --sizes 1000000 --stores sqlite --work /tmp/lethe-store-1m \\
        --ef 128,192,256,320,384,512 --replica-rates 1,2,5,10 --out /tmp/lethe-results/store_1m.json
    python benchmarks/bench_store_scale.py --sizes 1000000 --stores postgres --work /tmp/lethe-store-1m-pg \\
        --ef 128,192,256,320,384,512 --replica-rates 1,2,5,10 --out /tmp/lethe-results/store_1m.json --merge

After a change to how a store opens, ``--reopen --merge`` measures the cold and warm opens and
searches of the SQLite store an earlier run left in ``--work`` again, without the bulk load and
rebuild (whose figures it keeps).

The search breadth of the default row is the index's size rule (``expansion_for``); ``--ef``
sweeps fixed values on the same open.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DIM = 384
PROMPTS_PER_REQUEST = 20
AUGMENTS = 3
ROLES_PER_PROMPT = 1 + AUGMENTS  # indexed; plus one hard negative
NOISE = {"person": 1.0, "prompt": 0.8, "sample": 0.45, "hard": 1.2, "query_paraphrase": 0.5,
         "query_person": 0.8, "query_other": 1.0}
ATTRS = ["birthplace", "first novel", "main genre", "writing routine", "awards", "publisher", "childhood",
         "education", "influences", "latest book"]


# ---------------------------------------------------------------------------------------------
# synthetic store


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale / np.sqrt(DIM))


class Synth:
    """Deterministic synthetic forget store of ``n_live`` indexed samples."""

    def __init__(self, n_live: int, seed: int = 0) -> None:
        self.seed = seed
        per_request = PROMPTS_PER_REQUEST * ROLES_PER_PROMPT
        self.n_requests = max(1, -(-n_live // per_request))
        self.n_live = self.n_requests * per_request
        self.n_topics = max(1, self.n_requests // 50)
        self.topics = _unit(np.random.default_rng([seed, 0]).standard_normal((self.n_topics, DIM), dtype=np.float32))

    def person(self, r: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, r])
        person = _unit(self.topics[r % self.n_topics] + _noise(rng, (DIM,), NOISE["person"]))
        prompts = _unit(person + _noise(rng, (PROMPTS_PER_REQUEST, DIM), NOISE["prompt"]))
        return rng, person, prompts

    def request(self, r: int):
        """(ForgetRequest, samples, positive vectors in insertion order) of request ``r``."""
        from lethe.store import ForgetRequest, NegativeSample

        rng, _, prompts = self.person(r)
        req = ForgetRequest(kind="privacy", subject=None, n_prompts=PROMPTS_PER_REQUEST,
                            entities=[{"h": f"{r:08x}"}], id=f"r{self.seed}x{r:09d}")
        samples, positives = [], []
        for j, p in enumerate(prompts):
            vecs = _unit(p + _noise(rng, (ROLES_PER_PROMPT, DIM), NOISE["sample"]))
            text = (f"Could you tell me about the {ATTRS[j % len(ATTRS)]} of the writer filed as number {r}, "
                    f"question {j}?")
            samples.append(NegativeSample("", vecs[0], "rewrite", text))
            samples += [NegativeSample("", v, "augment") for v in vecs[1:]]
            positives.append(vecs)
            samples.append(NegativeSample("", _unit(p + _noise(rng, (DIM,), NOISE["hard"])), "hard_negative"))
        return req, samples, np.concatenate(positives)

    def queries(self, n: int) -> tuple[np.ndarray, list[str]]:
        rng = np.random.default_rng([self.seed, 2])
        out, kinds = [], []
        for _ in range(n):
            u = rng.random()
            r = int(rng.integers(self.n_requests))
            _, person, prompts = self.person(r)
            if u < 0.7:
                out.append(_unit(prompts[int(rng.integers(PROMPTS_PER_REQUEST))] +
                                 _noise(rng, (DIM,), NOISE["query_paraphrase"])))
                kinds.append("paraphrase")
            elif u < 0.9:
                out.append(_unit(person + _noise(rng, (DIM,), NOISE["query_person"])))
                kinds.append("person")
            else:
                out.append(_unit(self.topics[int(rng.integers(self.n_topics))] +
                                 _noise(rng, (DIM,), NOISE["query_other"])))
                kinds.append("other")
        return np.stack(out), kinds


class TopK:
    """Exact top-k over a stream of (positions, vectors)."""

    def __init__(self, queries: np.ndarray, k: int = 10) -> None:
        self.q, self.k = queries, k
        self.sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.pos = np.full((len(queries), k), -1, dtype=np.int64)

    def update(self, start: int, vectors: np.ndarray) -> None:
        s = self.q @ vectors.T
        allsims = np.concatenate([self.sims, s], axis=1)
        allpos = np.concatenate([self.pos, np.broadcast_to(np.arange(start, start + len(vectors)),
                                                           (len(self.q), len(vectors)))], axis=1)
        top = np.argpartition(-allsims, self.k - 1, axis=1)[:, :self.k]
        self.sims = np.take_along_axis(allsims, top, 1)
        self.pos = np.take_along_axis(allpos, top, 1)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(-self.sims, axis=1)
        return np.take_along_axis(self.pos, order, 1), np.take_along_axis(self.sims, order, 1)


# ---------------------------------------------------------------------------------------------
# stores and measurements


def open_store(spec: dict, **kw):
    from lethe.store import SQLiteStore
    from lethe.store.keys import KeySource

    key = KeySource(env=None, file=Path(spec["key"]))
    if spec["kind"] == "sqlite":
        return SQLiteStore(spec["path"], dim=DIM, key=key, index=spec.get("index"), **kw)
    from lethe.store.postgres import PostgresStore

    return PostgresStore(spec["dsn"], dim=DIM, schema=spec["schema"], key=key, index=spec.get("index"),
                         index_dir=spec.get("index_dir"), **kw)


def rss_bytes() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def measure_search(store, work: Path, ids: np.ndarray, n_queries: int) -> dict:
    data = np.load(work / "truth.npz")
    q, gt_pos, gt_sims = data["queries"][:n_queries], data["pos"][:n_queries], data["sims"][:n_queries]
    gt = ids[gt_pos]
    for x in q[:20]:  # warm-up
        store.search(x[None], k=10)
    lat, cpu, got, top_request = [], [], [], []
    for x in q:
        t, c = time.perf_counter(), time.process_time()
        row = store.search(x[None], k=10)[0]
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # what a free core would take, whatever the load
        got.append([m.sample.id for m in row])
        top_request.append(row[0].sample.request_id if row else None)
    seed = int(data["seed"]) if "seed" in data else 0
    per_request = PROMPTS_PER_REQUEST * ROLES_PER_PROMPT
    # what detection needs: the nearest sample's request is the exact nearest sample's request
    req1 = [float(r == f"r{seed}x{int(p[0]) // per_request:09d}") for r, p in zip(top_request, gt_pos, strict=True)]
    strict = [len(set(g) & set(t.tolist())) / 10 for g, t in zip(got, gt, strict=True)]
    # ann-benchmarks: a returned neighbour counts when its exact similarity is within 1e-3 of the 10th
    vectors = np.load(work / "positives.npy", mmap_mode="r")  # ids are ascending in insertion order
    eps = []
    for i, g in enumerate(got):
        g64 = np.asarray(g, dtype=np.int64)
        at = np.minimum(np.searchsorted(ids, g64), len(ids) - 1)
        at = at[ids[at] == g64]  # a sample added after the generated ones (a replica run's) is not a neighbour
        sims = np.asarray(vectors[np.sort(at)]) @ q[i] if len(at) else np.empty(0)
        eps.append(float(np.sum(sims >= gt_sims[i, 9] - 1e-3)) / 10)
    at1 = [float(bool(g) and g[0] == t[0]) for g, t in zip(got, gt, strict=True)]
    kinds = data["kinds"][:n_queries] if "kinds" in data else np.asarray(["all"] * len(q))
    by_kind = {str(k): {"queries": int(np.sum(kinds == k)),
                        "recall_at_10": float(np.mean(np.asarray(strict)[kinds == k])),
                        "recall_at_10_eps1e-3": float(np.mean(np.asarray(eps)[kinds == k])),
                        "recall_at_1": float(np.mean(np.asarray(at1)[kinds == k])),
                        "request_recall_at_1": float(np.mean(np.asarray(req1)[kinds == k])),
                        "below_0.8": int(np.sum(np.asarray(strict)[kinds == k] < 0.8))} for k in np.unique(kinds)}
    return {"by_kind": by_kind, "queries": len(q), "p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3,
            "cpu_p50_ms": _pct(cpu, 50) * 1e3, "cpu_p99_ms": _pct(cpu, 99) * 1e3,
            "mean_ms": float(np.mean(lat)) * 1e3, "recall_at_10": float(np.mean(strict)),
            "recall_at_10_eps1e-3": float(np.mean(eps)), "recall_at_1": float(np.mean(at1)),
            "request_recall_at_1": float(np.mean(req1)), "queries_below_0.8_recall": int(np.sum(np.asarray(strict) < 0.8))}


def measure_writes(store, n: int, seed: int) -> dict:
    synth = Synth(PROMPTS_PER_REQUEST * ROLES_PER_PROMPT * n, seed=seed)
    items = [synth.request(r)[:2] for r in range(n)]
    add, rev = [], []
    for req, samples in items:
        t = time.perf_counter()
        store.add_request(req, samples)
        add.append(time.perf_counter() - t)
    probe = items[0][1][0].embedding[None]
    assert store.search(probe, k=1)[0][0].sample.request_id == items[0][0].id
    for req, _ in items:
        t = time.perf_counter()
        store.revoke(req.id)
        rev.append(time.perf_counter() - t)
    assert all(m.sample.request_id != items[0][0].id for m in store.search(probe, k=10)[0])
    return {"requests": n, "samples_per_request": len(items[0][1]),
            "add_p50_ms": _pct(add, 50) * 1e3, "add_p99_ms": _pct(add, 99) * 1e3, "add_max_ms": max(add) * 1e3,
            "revoke_p50_ms": _pct(rev, 50) * 1e3, "revoke_p99_ms": _pct(rev, 99) * 1e3,
            "revoke_max_ms": max(rev) * 1e3}


def child_open(args: argparse.Namespace) -> None:
    """One open of the store in this fresh process; JSON on stdout."""
    spec = json.loads(args.spec)
    import lethe.store  # noqa: F401  the imports every open pays (usearch, onnxruntime probe, psycopg)

    if spec["kind"] == "postgres":
        import psycopg  # noqa: F401
    work = Path(args.work)
    before = rss_bytes()
    t, c = time.perf_counter(), time.process_time()
    store = open_store(spec)
    out: dict = {"open_s": time.perf_counter() - t, "open_cpu_s": time.process_time() - c,
                 "index_open": store.index_open, "rss_before": before,
                 "rss_after_open": rss_bytes(), "vectors": store.indexed_count()}
    out["usearch_memory_usage"] = int(store._live.index.memory_bytes())
    ids = np.load(work / f"ids-{spec['kind']}.npy")
    vi = store._live.index
    out["expansion_search"] = vi.search_breadth()  # what the configuration (by default: the size) gives
    if args.search:
        out["search"] = measure_search(store, work, ids, args.queries)
        if args.ef:
            sweep = {}
            base = vi.params
            for ef in [int(x) for x in args.ef.split(",")]:
                vi.params = dataclasses.replace(base, expansion_search=ef)  # a fixed breadth overrides the rule
                sweep[ef] = measure_search(store, work, ids, args.queries)
            vi.params = base
            out["ef_sweep"] = sweep
        out["rss_after_search"] = rss_bytes()
    if args.writes:
        out["writes"] = measure_writes(store, args.writes, seed=1000 + int(time.time()) % 1000)
    t = time.perf_counter()
    store.close()
    out["close_s"] = time.perf_counter() - t
    print("RESULT " + json.dumps(out), flush=True)


def child_replica(args: argparse.Namespace) -> None:
    """A replica following the store: prints when ready, then the time each new request became live here."""
    spec = json.loads(args.spec)
    store = open_store(spec)
    seen: dict[str, float] = {}
    known = set(store._live.requests())

    def on_change() -> None:
        now = time.time()
        for rid in store._live.requests() - known:
            seen.setdefault(rid, now)
            known.add(rid)

    store.subscribe(on_change)
    print("READY", flush=True)
    sys.stdin.readline()  # the writer is done
    time.sleep(3.0)
    on_change()
    print("RESULT " + json.dumps(seen), flush=True)
    store.close()


def run_child(mode: str, spec: dict, work: Path, timeout: float, **flags) -> dict:
    flags = {"writes": 0, "ef": "", **flags}  # the child's own defaults are the parent's, not these
    cmd = [sys.executable, __file__, "--_child", mode, "--spec", json.dumps(spec), "--work", str(work)]
    for k, v in flags.items():
        if v is True:
            cmd.append(f"--{k}")
        elif v is not None and v is not False:
            cmd += [f"--{k}", str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child {mode} failed ({proc.returncode}): {proc.stderr[-3000:]}")


def drop_page_cache(paths: list[Path]) -> None:
    """Evict the files' pages (clean after the fsyncs of their writers; SQLite's -wal/-shm are left alone)."""
    for p in paths:
        if p.exists() and p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock")):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def disk_bytes(spec: dict) -> dict:
    if spec["kind"] == "sqlite":
        db = Path(spec["path"])
        with contextlib.closing(sqlite3.connect(db)) as raw:  # `with connect()` alone leaves it open
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        files = {p.name: p.stat().st_size for p in db.parent.glob(db.name + "*")}
        return {"database": sum(v for k, v in files.items() if ".index" not in k),
                "index_file": sum(v for k, v in files.items() if k.endswith(".usearch")),
                "index_record": sum(v for k, v in files.items() if k.endswith(".index.json")), "files": files}
    import psycopg

    with psycopg.connect(spec["dsn"], autocommit=True) as conn:
        conn.execute(f'VACUUM ANALYZE "{spec["schema"]}".samples')
        db = sum(int(conn.execute("SELECT pg_total_relation_size(%s)", (f'"{spec["schema"]}".{t}',)).fetchone()[0])
                 for t in ("samples", "requests", "meta", "state", "migrations"))
    folder = Path(spec["index_dir"])
    files = {p.name: p.stat().st_size for p in folder.glob("*")}
    return {"database": db, "index_file": sum(v for k, v in files.items() if k.endswith(".usearch")),
            "index_record": sum(v for k, v in files.items() if k.endswith(".json")), "files": files}


def bulk_load(spec: dict, synth: Synth, work: Path, truth: TopK | None) -> dict:
    store = open_store(spec, lazy_index=True, **({"watch": False} if spec["kind"] == "sqlite" else
                                                  {"listen": False}))
    ids = np.empty(synth.n_live, dtype=np.int64)
    keep = np.lib.format.open_memmap(work / "positives.npy", mode="w+", dtype=np.float32,
                                     shape=(synth.n_live, DIM)) if truth is not None else None
    t_db = 0.0
    t_gen = time.perf_counter()
    pos = 0
    batch: list = []
    vecs: list[np.ndarray] = []

    def flush() -> None:
        nonlocal t_db, pos
        t = time.perf_counter()
        store.add_requests([(r, s) for r, s in batch], batch_rows=10**9)
        t_db += time.perf_counter() - t
        for _req, samples in batch:
            for smp in samples:
                if smp.role != "hard_negative":
                    ids[pos] = smp.id
                    pos += 1
        if truth is not None:
            v = np.concatenate(vecs)
            truth.update(pos - len(v), v)
            keep[pos - len(v):pos] = v  # type: ignore[index]
        batch.clear()
        vecs.clear()

    for r in range(synth.n_requests):
        req, samples, positives = synth.request(r)
        batch.append((req, samples))
        vecs.append(positives)
        if len(batch) * len(samples) >= 20_000:
            flush()
    if batch:
        flush()
    store.close()
    np.save(work / f"ids-{spec['kind']}.npy", ids)
    if keep is not None:
        keep.flush()
    return {"seconds_in_store": round(t_db, 2), "seconds_total": round(time.perf_counter() - t_gen, 2),
            "rows": int(synth.n_requests * PROMPTS_PER_REQUEST * (ROLES_PER_PROMPT + 1)), "indexed": int(pos),
            "rows_per_s": round(synth.n_requests * PROMPTS_PER_REQUEST * (ROLES_PER_PROMPT + 1) / max(t_db, 1e-9))}


def replica_catchup(spec: dict, work: Path, rates: list[float], seconds: float, seed: int) -> dict:
    """Lag from commit to a replica's index holding the request, at stepped add rates."""
    proc = subprocess.Popen([sys.executable, __file__, "--_child", "replica", "--spec", json.dumps(spec),
                             "--work", str(work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    t0 = time.time()
    while (line := proc.stdout.readline()) and not line.startswith("READY"):
        if time.time() - t0 > 3600:
            raise RuntimeError("replica did not start")
    writer = open_store(spec, lazy_index=True, **({"watch": False} if spec["kind"] == "sqlite" else
                                                   {"listen": False}))
    synth = Synth(PROMPTS_PER_REQUEST * ROLES_PER_PROMPT * 2000, seed=seed)
    committed: dict[str, tuple[float, float]] = {}
    r = 0
    for rate in rates:
        start = time.time()
        n = 0
        while time.time() - start < seconds:
            due = start + n / rate
            if time.time() < due:
                time.sleep(due - time.time())
            req, samples, _ = synth.request(r)
            r += 1
            writer.add_request(req, samples)
            committed[req.id] = (time.time(), rate)
            n += 1
    writer.close()
    proc.stdin.write("done\n")
    proc.stdin.flush()
    out = proc.stdout.read()
    proc.wait(timeout=600)
    seen = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    per_rate = {}
    for rate in rates:
        ids = [k for k, (_, rt) in committed.items() if rt == rate]
        lags = [seen[k] - committed[k][0] for k in ids if k in seen]
        span = [committed[k][0] for k in ids]
        per_rate[str(rate)] = {"adds": len(ids), "achieved_per_s": round(len(ids) / max(1e-9, max(span) - min(span)),
                                                                        2) if len(ids) > 1 else None,
                               "seen": len(lags), "lag_p50_ms": _pct(lags, 50) * 1e3, "lag_p99_ms": _pct(lags, 99) * 1e3,
                               "lag_max_ms": max(lags) * 1e3 if lags else None}
    return {"samples_per_add": PROMPTS_PER_REQUEST * (ROLES_PER_PROMPT + 1), "seconds_per_rate": seconds,
            "writer": "a second store object that does not load its index (as an admin command)",
            "rates": per_rate}


def versions(dsn: str | None) -> dict:
    import psycopg
    import usearch

    import lethe

    out = {"lethe": lethe.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "usearch": usearch.__version__, "psycopg": psycopg.__version__, "sqlite": sqlite3.sqlite_version}
    if dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    return out


def machine() -> dict:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "mem_total_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def per_sample(res: dict) -> dict:
    n = res["bulk_load"]["indexed"]
    rows = res["bulk_load"]["rows"]
    disk = res["disk"]
    warm = res["open_warm"]
    rss = warm["rss_after_open"]["VmRSS"] - warm["rss_before"]["VmRSS"]
    return {"db_bytes_per_stored_row": round(disk["database"] / rows, 1),
            "db_bytes_per_indexed_sample": round(disk["database"] / n, 1),
            "index_file_bytes_per_indexed_sample": round((disk["index_file"] + disk["index_record"]) / n, 1),
            "disk_total_bytes_per_indexed_sample": round((disk["database"] + disk["index_file"] +
                                                          disk["index_record"]) / n, 1),
            "rss_added_by_open_bytes_per_sample": round(rss / n, 1),
            "rss_total_bytes_per_sample": round(warm["rss_after_open"]["VmRSS"] / n, 1),
            "usearch_memory_usage_bytes_per_sample": round(warm["usearch_memory_usage"] / n, 1)}


def run_size(size: int, kind: str, args: argparse.Namespace, work: Path, truth_done: bool,
             previous: dict | None = None) -> dict:
    synth = Synth(size, seed=args.seed)
    spec: dict = {"kind": kind, "key": str(work / "store.key")}
    if args.reopen:
        return reopen(synth, kind, args, work, spec, previous)
    if kind == "sqlite":
        folder = work / "sqlite"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        spec["path"] = str(folder / "store.db")
    else:
        spec["dsn"] = os.environ["LETHE_TEST_PG_DSN"]
        spec["schema"] = f"bench_scale_{size}"
        spec["index_dir"] = str(work / "pg-index")
        shutil.rmtree(spec["index_dir"], ignore_errors=True)
        import psycopg

        with psycopg.connect(spec["dsn"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{spec["schema"]}" CASCADE')
    res: dict = {"store": kind, "size": synth.n_live, "requests": synth.n_requests}
    truth = None
    if not truth_done:
        q, kinds = synth.queries(args.queries)
        truth = TopK(q)
    t = time.perf_counter()
    res["bulk_load"] = bulk_load(spec, synth, work, truth)
    print(f"[{kind} {size}] bulk load {res['bulk_load']}", flush=True)
    if truth is not None:
        pos, sims = truth.sorted()
        np.savez(work / "truth.npz", queries=truth.q, pos=pos, sims=sims, kinds=np.asarray(kinds), seed=args.seed)
    timeout = args.child_timeout
    res["open_rebuild"] = run_child("open", spec, work, timeout)
    print(f"[{kind} {size}] rebuild {res['open_rebuild']['open_s']:.1f} s, close/save "
          f"{res['open_rebuild']['close_s']:.1f} s", flush=True)
    res["disk"] = disk_bytes(spec)
    files = [Path(spec["path"])] if kind == "sqlite" else []
    folder = Path(spec["path"]).parent if kind == "sqlite" else Path(spec["index_dir"])
    files += list(folder.glob("*"))
    drop_page_cache(files)
    res["open_cold"] = run_child("open", spec, work, timeout, search=True, queries=args.queries)
    res["open_warm"] = run_child("open", spec, work, timeout, search=True, queries=args.queries, ef=args.ef,
                                 writes=args.writes)
    print(f"[{kind} {size}] cold {res['open_cold']['open_s']:.2f} s, warm {res['open_warm']['open_s']:.2f} s, "
          f"search {res['open_warm']['search']}", flush=True)
    res["per_sample"] = per_sample(res)
    if args.replica_rates:
        res["replica"] = replica_catchup(spec, work, [float(x) for x in args.replica_rates.split(",")],
                                         args.replica_seconds, seed=args.seed + 7)
        print(f"[{kind} {size}] replica {res['replica']['rates']}", flush=True)
    res["wall_s"] = round(time.perf_counter() - t, 1)
    if kind == "postgres" and not args.keep:
        import psycopg

        with psycopg.connect(spec["dsn"], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{spec["schema"]}" CASCADE')
    return res


def reopen(synth: Synth, kind: str, args: argparse.Namespace, work: Path, spec: dict, previous: dict | None) -> dict:
    """``--reopen``: the cold and warm opens (and searches) of the SQLite store an earlier run left in
    ``--work``, with that run's bulk load and rebuild figures carried over from ``--out``."""
    folder = work / "sqlite"
    spec["path"] = str(folder / "store.db")
    if kind != "sqlite" or previous is None or not (folder / "store.db").exists() or not (work / "truth.npz").exists():
        raise SystemExit("--reopen needs --merge, a SQLite result of this size in --out and its store in --work")
    res = {k: previous[k] for k in ("store", "size", "requests", "bulk_load", "open_rebuild")} | {"reopened": True}
    t = time.perf_counter()
    res["disk"] = disk_bytes(spec)
    drop_page_cache([Path(spec["path"]), *folder.glob("*")])
    res["open_cold"] = run_child("open", spec, work, args.child_timeout, search=True, queries=args.queries)
    res["open_warm"] = run_child("open", spec, work, args.child_timeout, search=True, queries=args.queries,
                                 ef=args.ef, writes=args.writes)
    print(f"[{kind} {synth.n_live}] reopened: cold {res['open_cold']['open_s']:.2f} s, warm "
          f"{res['open_warm']['open_s']:.2f} s, search {res['open_warm']['search']}", flush=True)
    res["per_sample"] = per_sample(res)
    if "replica" in previous:
        res["replica"] = previous["replica"]
    res["wall_s"] = round(time.perf_counter() - t, 1)
    return res


def run_variants(args: argparse.Namespace, work: Path) -> list[dict]:
    """Rebuild the index of one SQLite store with each scalar type (no file): recall, speed, memory."""
    size = args.variant_size
    synth = Synth(size, seed=args.seed)
    folder = work / "variants"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    spec = {"kind": "sqlite", "key": str(work / "store.key"), "path": str(folder / "store.db")}
    q, kinds = synth.queries(args.queries)
    truth = TopK(q)
    load = bulk_load(spec, synth, work, truth)
    pos, sims = truth.sorted()
    np.savez(work / "truth.npz", queries=q, pos=pos, sims=sims, kinds=np.asarray(kinds), seed=args.seed)
    out = []
    for dtype in args.variants.split(","):
        s = {**spec, "index": {"dtype": dtype}}
        for f in folder.glob("store.db.index*"):
            f.unlink()
        r = run_child("open", s, work, args.child_timeout, search=True, queries=args.queries)
        graph = sum(p.stat().st_size for p in folder.glob("store.db.index.*.usearch"))
        out.append({"dtype": dtype, "size": synth.n_live, "build_s": r["index_open"]["seconds"],
                    "search": r["search"], "index_file_bytes_per_sample": round(graph / synth.n_live, 1),
                    "rss_added_by_open_bytes_per_sample": round(
                        (r["rss_after_open"]["VmRSS"] - r["rss_before"]["VmRSS"]) / synth.n_live, 1),
                    "usearch_memory_usage_bytes_per_sample": round(r["usearch_memory_usage"] / synth.n_live, 1),
                    "bulk_load": load})
        print(f"[variant {dtype}] {out[-1]}", flush=True)
    return out


def write_notes(path: Path, report: dict, command: str) -> None:
    lines = ["# Store at scale (benchmarks/bench_store_scale.py)", "",
             f"Date 2026-12-01. Machine: {report['machine']['cpus']} CPUs, load average at start "
             f"{report['machine']['loadavg_start']} (shared with other work). Versions: {report['versions']}.", "",
             "```bash", command, "```", "",
             "| store | live samples | bulk load (s, rows/s) | open rebuild (s) | open cold (s) | open warm (s) | "
             "search p50 / p99 (ms) | recall@10 | recall@10 (1e-3 ties) | recall@1 | request@1 | add p50 / p99 (ms) | "
             "revoke p50 / p99 (ms) | DB B/row | DB B/sample | index file B/sample | RSS added B/sample |",
             "|" + "---|" * 17]
    for r in report["results"]:
        w, s, ps = r["open_warm"], r["open_warm"]["search"], r["per_sample"]
        wr = w.get("writes", {})
        lines.append(
            f"| {r['store']} | {r['size']:,} | {r['bulk_load']['seconds_in_store']} ({r['bulk_load']['rows_per_s']:,}) | "
            f"{r['open_rebuild']['open_s']:.1f} | {r['open_cold']['open_s']:.2f} | {w['open_s']:.2f} | "
            f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} | {s['recall_at_10']:.4f} | {s['recall_at_10_eps1e-3']:.4f} | "
            f"{s['recall_at_1']:.3f} | {s.get('request_recall_at_1', float('nan')):.3f} | "
            f"{wr.get('add_p50_ms', float('nan')):.1f} / {wr.get('add_p99_ms', float('nan')):.1f} | "
            f"{wr.get('revoke_p50_ms', float('nan')):.1f} / {wr.get('revoke_p99_ms', float('nan')):.1f} | "
            f"{ps['db_bytes_per_stored_row']} | {ps['db_bytes_per_indexed_sample']} | "
            f"{ps['index_file_bytes_per_indexed_sample']} | "
            f"{ps['rss_added_by_open_bytes_per_sample']} |")
    sweeps = [r for r in report["results"] if r["open_warm"].get("ef_sweep")]
    if sweeps:
        lines += ["", "Search breadth (`expansion_search`, ef) on the warm open; the default row is the size rule's:",
                  "", "| store | live samples | ef | p50 / p99 (ms) | CPU p50 / p99 (ms) | recall@10 | recall@10 (1e-3 ties) | "
                  "request@1 |", "|---|---|---|---|---|---|---|---|"]
        for r in sweeps:
            w = r["open_warm"]
            rows = [(f"{w.get('expansion_search', '?')} (default)", w["search"])]
            rows += [(str(ef), x) for ef, x in w["ef_sweep"].items()]
            for ef, x in rows:
                lines.append(f"| {r['store']} | {r['size']:,} | {ef} | {x['p50_ms']:.2f} / {x['p99_ms']:.2f} | "
                             f"{x.get('cpu_p50_ms', float('nan')):.2f} / {x.get('cpu_p99_ms', float('nan')):.2f} | "
                             f"{x['recall_at_10']:.4f} | {x['recall_at_10_eps1e-3']:.4f} | "
                             f"{x.get('request_recall_at_1', float('nan')):.3f} |")
    reps = [r for r in report["results"] if "replica" in r]
    if reps:
        lines += ["", "Replica catch-up (commit -> the other process's index holds the request; 100 samples per add):",
                  "", "| store | live samples | target adds/s | achieved adds/s | lag p50 (ms) | lag p99 (ms) | max (ms) |",
                  "|---|---|---|---|---|---|---|"]
        for r in reps:
            for rate, x in r["replica"]["rates"].items():
                lines.append(f"| {r['store']} | {r['size']:,} | {rate} | {x['achieved_per_s']} | {x['lag_p50_ms']:.0f} | "
                             f"{x['lag_p99_ms']:.0f} | {x['lag_max_ms'] or float('nan'):.0f} |")
    if report.get("variants"):
        lines += ["", "Index scalar type (SQLite, index rebuilt per type):", "",
                  "| dtype | samples | build (s) | p50 / p99 (ms) | recall@10 | recall@10 (1e-3 ties) | recall@1 | "
                  "request@1 | index file B/sample | RSS added B/sample |", "|---|---|---|---|---|---|---|---|---|---|"]
        for v in report["variants"]:
            s = v["search"]
            lines.append(f"| {v['dtype']} | {v['size']:,} | {v['build_s']:.1f} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | "
                         f"{s['recall_at_10']:.4f} | {s['recall_at_10_eps1e-3']:.4f} | {s['recall_at_1']:.3f} | "
                         f"{s.get('request_recall_at_1', float('nan')):.3f} | {v['index_file_bytes_per_sample']} | {v['rss_added_by_open_bytes_per_sample']} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="live (indexed) samples per run, e.g. 10000,100000,1000000")
    ap.add_argument("--stores", default="sqlite,postgres")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--writes", type=int, default=30, help="requests added then revoked for the latency figures")
    ap.add_argument("--ef", default="128,256,384,512",
                    help="fixed expansion_search values swept on the warm open after the default (size rule) ('' = none)")
    ap.add_argument("--replica-rates", default="2,5,10,20", help="adds per second the writer attempts, in turn")
    ap.add_argument("--replica-seconds", type=float, default=6.0)
    ap.add_argument("--variants", default="", help="index scalar types to compare, e.g. i8,f16,f32")
    ap.add_argument("--variant-size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/lethe-store-scale")
    ap.add_argument("--out", default="/tmp/lethe-results/store_scale.json")
    ap.add_argument("--notes", default="/tmp/lethe-notes/store-scale.md")
    ap.add_argument("--merge", action="store_true", help="add to the results already in --out")
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL schemas")
    ap.add_argument("--reopen", action="store_true",
                    help="with --merge: measure only the opens and searches of the SQLite store left in --work "
                         "(after a change to the open path), keeping the earlier bulk load and rebuild figures")
    ap.add_argument("--child-timeout", type=float, default=7200)
    ap.add_argument("--notes-only", action="store_true", help="rewrite --notes from the results in --out, run nothing")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--search", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child == "open":
        child_open(args)
        return
    if args._child == "replica":
        child_replica(args)
        return
    if args.notes_only:
        report = json.loads(Path(args.out).read_text())
        write_notes(Path(args.notes), report, "; ".join(report.get("commands", [])))
        return
    from lethe.store.index import IndexParams

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dsn = os.environ.get("LETHE_TEST_PG_DSN")
    stores = [s for s in args.stores.split(",") if s]
    if "postgres" in stores and not dsn:
        raise SystemExit("postgres needs LETHE_TEST_PG_DSN: eval \"$(.ci/start_postgres.sh)\"")
    out = Path(args.out)
    report = json.loads(out.read_text()) if args.merge and out.exists() else {"benchmark": "store_scale",
                                                                               "results": []}
    report.update({"versions": versions(dsn), "machine": machine(),
                   "config": {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "spec"},
                   "synthetic": {"dim": DIM, "prompts_per_request": PROMPTS_PER_REQUEST, "augments": AUGMENTS,
                                 "noise": NOISE},
                   "index_defaults": dataclasses.asdict(IndexParams())})
    command = "python benchmarks/bench_store_scale.py " + " ".join(sys.argv[1:])
    report.setdefault("commands", []).append(command)
    if args.variants:
        report["variants"] = run_variants(args, work)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    for size in [int(s) for s in args.sizes.split(",") if s]:
        for i, kind in enumerate(stores):
            previous = next((r for r in report["results"] if r["store"] == kind and r["size"] == Synth(size).n_live),
                            None)
            res = run_size(size, kind, args, work, truth_done=i > 0 or args.reopen, previous=previous)
            report["results"] = [r for r in report["results"] if (r["store"], r["size"]) != (res["store"], res["size"])]
            report["results"].append(res)
            report["machine"]["loadavg_end"] = os.getloadavg()
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1))
            write_notes(Path(args.notes), report, command)
    write_notes(Path(args.notes), report, command)
    print(f"wrote {out} and {args.notes}")


if __name__ == "__main__":
    main()
