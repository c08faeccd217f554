"""The persisted vector index: reopened without a rebuild, stale or corrupt files detected and rebuilt,
compact vectors that keep the top-k, float32 stores of older versions still searched."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid

import numpy as np
import pytest

from lethe.store import ForgetRequest, NegativeSample, SQLiteStore
from lethe.store.codec import blob_format, decode, encode, for_index
from lethe.store.index import VectorIndex

DIM = 32
# search the graph even at this size, so a reloaded graph is what answers, with a breadth above the
# tests' sizes, so the answers do not hang on how a (multi-threaded, order-dependent) build linked it
HNSW = {"exact_below": 0, "expansion_search": 512}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _requests(n: int, per: int = 6, seed: int = 0) -> list[tuple[ForgetRequest, list[NegativeSample]]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        centre = rng.normal(size=DIM)
        vecs = _unit(centre + 0.3 * rng.normal(size=(per, DIM)))
        req = ForgetRequest(kind="privacy", subject=f"s{seed}.{i}")
        samples = [NegativeSample("", vecs[0], "rewrite", f"rewrite {seed}.{i}")]
        samples += [NegativeSample("", v, "augment") for v in vecs[1:-1]]
        samples += [NegativeSample("", vecs[-1], "hard_negative")]
        out.append((req, samples))
    return out


def _queries(n: int = 20, seed: int = 99) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, DIM)))


def _answers(store, q: np.ndarray, k: int = 5) -> list[list[tuple[int, str, str, str | None, float]]]:
    return [[(m.sample.id, m.sample.request_id, m.sample.role, m.sample.text, round(m.score, 5)) for m in row]
            for row in store.search(q, k=k)]


def _open(path, **kw) -> SQLiteStore:
    return SQLiteStore(path, dim=DIM, watch=False, index=kw.pop("index", HNSW), **kw)


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("LETHE_SECRET", "test key for the index tests")


def _index_files(db) -> list:
    return sorted(db.parent.glob(db.name + ".index.*.usearch"))


def test_persisted_index_reopens_without_rebuild_and_answers_the_same(tmp_path):
    db = tmp_path / "store.db"
    store = _open(db)
    store.add_requests(_requests(40))
    assert store.index_open["how"] == "rebuilt"
    before = _answers(store, _queries())
    store.close()
    assert len(_index_files(db)) == 1 and (tmp_path / "store.db.index.json").exists()

    again = _open(db)
    try:
        assert again.index_open["how"] == "loaded" and again._rebuilds == 0
        assert again.indexed_count() == 40 * 5  # hard negatives are stored, never indexed
        assert _answers(again, _queries()) == before
        top = again.search(_requests(40)[3][1][0].embedding[None], k=1)[0][0]
        assert top.sample.text == "rewrite 0.3" and top.sample.role == "rewrite" and top.score > 0.999
    finally:
        again.close()


def test_index_behind_the_database_is_caught_up_not_rebuilt(tmp_path):
    db = tmp_path / "store.db"
    items = _requests(30)
    store = _open(db)
    store.add_requests(items)
    store.close()
    other = _open(db, index_file=False)  # another process writes while the index file sits on disk
    extra = _requests(1, seed=7)
    other.add_requests(extra)
    assert other.revoke(items[0][0].id)
    other.close()

    again = _open(db)
    try:
        assert again.index_open["how"] == "loaded and caught up" and again._rebuilds == 0
        assert again.search(extra[0][1][0].embedding[None], k=1)[0][0].sample.request_id == extra[0][0].id
        assert all(m.sample.request_id != items[0][0].id for m in again.search(items[0][1][0].embedding[None], k=10)[0])
        assert again.indexed_count() == 30 * 5
    finally:
        again.close()
    reference = _open(db, index_file=False)  # the same answers as an index built from scratch
    try:
        q = _queries()
        assert {x[0] for row in _answers(_open(db), q) for x in row} == {x[0] for row in _answers(reference, q)
                                                                            for x in row}
    finally:
        reference.close()


def test_rows_rewritten_in_place_or_another_database_force_a_rebuild(tmp_path):
    db = tmp_path / "store.db"
    items = _requests(10)
    store = _open(db)
    store.add_requests(items)
    store.close()
    moved = _unit(np.ones(DIM))  # an external tool rewrites a stored vector: no live-set diff can see it
    target = items[4][1][0].id
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute("UPDATE samples SET embedding=? WHERE id=?", (encode(moved, "f32"), target))
    again = _open(db)
    try:
        assert again.index_open["how"] == "rebuilt"
        assert again.search(moved[None], k=1)[0][0].sample.id == target
    finally:
        again.close()

    for f in tmp_path.glob("store.db*"):  # a new database at the same path, the old index files kept
        if ".index" not in f.name:
            f.unlink()
    fresh = _open(db)
    try:
        assert fresh.index_open["how"] == "rebuilt" and fresh.indexed_count() == 0
        assert fresh.search(moved[None], k=1) == [[]]
    finally:
        fresh.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "record", "missing"])
def test_a_corrupt_index_file_is_detected_and_rebuilt(tmp_path, damage):
    db = tmp_path / "store.db"
    store = _open(db)
    store.add_requests(_requests(25))
    expected = _answers(store, _queries())
    store.close()
    graph = _index_files(db)[0]
    blob = bytearray(graph.read_bytes())
    if damage == "flip":  # a few bytes of vectors or links: usearch itself would load this
        for i in range(len(blob) // 3, len(blob), len(blob) // 7):
            blob[i] ^= 0x5A
        graph.write_bytes(bytes(blob))
    elif damage == "truncate":
        graph.write_bytes(bytes(blob[: len(blob) // 2]))
    elif damage == "record":
        record = tmp_path / "store.db.index.json"
        record.write_text(record.read_text()[:-40])
    else:
        graph.unlink()
    again = _open(db)
    try:
        assert again.index_open["how"] == "rebuilt"
        assert _answers(again, _queries()) == expected or \
            [{x[0] for x in r} for r in _answers(again, _queries())] == [{x[0] for x in r} for r in expected]
    finally:
        again.close()
    assert _open(db).index_open["how"] == "loaded"  # the rebuilt index was saved in its place


def test_record_with_keys_of_unknown_requests_is_refused(tmp_path):
    db = tmp_path / "store.db"
    store = _open(db)
    store.add_requests(_requests(5))
    store.close()
    record_path = tmp_path / "store.db.index.json"
    record = json.loads(record_path.read_text())
    record["requests"] = [None] * len(record["requests"])
    record_path.write_text(json.dumps(record))
    assert _open(db).index_open["how"] == "rebuilt"


@pytest.mark.parametrize("fmt", ["i8", "f16", "f32"])
def test_vector_formats_round_trip(fmt):
    v = _unit(np.random.default_rng(1).normal(size=(50, 384)))
    for x in v:
        blob = encode(x, fmt)
        assert blob_format(blob, 384) == fmt and len(blob) == {"i8": 388, "f16": 768, "f32": 1536}[fmt]
        y = decode(blob, 384)
        assert y.dtype == np.float32 and float(x @ y / np.linalg.norm(y)) > 0.9999
        assert np.abs(x - y).max() < {"i8": 2e-3, "f16": 2e-4, "f32": 1e-9}[fmt]


def test_batch_encoding_matches_one_by_one():
    from lethe.store.codec import encode_many

    x = np.random.default_rng(2).normal(size=(7, 384)).astype(np.float32)
    for fmt in ("i8", "f16", "f32"):
        assert encode_many(x, fmt) == [encode(v, fmt) for v in x]


@pytest.mark.parametrize("dtype", ["i8", "f16", "f32"])
def test_compact_index_keeps_top_k_and_scores(dtype):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(20, 64))
    data = _unit(centres[rng.integers(0, 20, 400)] + 0.6 * rng.normal(size=(400, 64)))
    queries = _unit(centres[rng.integers(0, 20, 30)] + 0.6 * rng.normal(size=(30, 64)))
    index = VectorIndex(64, {"dtype": dtype})
    index.add(np.arange(400, dtype=np.uint64), for_index(data, dtype))
    exact = queries @ data.T
    tol = {"i8": 3e-3, "f16": 1e-3, "f32": 1e-5}[dtype]  # what the scalar type may move a cosine by
    for i, row in enumerate(index.search(queries, 5)):
        keys = [k for k, _ in row]
        truth = np.sort(exact[i])[::-1]
        assert len(set(keys)) == 5 and all(exact[i][k] >= truth[4] - 2 * tol for k in keys)  # top-5, up to ties
        assert exact[i][keys[0]] >= truth[0] - 2 * tol
        assert np.allclose([s for _, s in row], exact[i][keys], atol=tol)  # scores are cosines


def test_searches_and_writes_during_a_save(tmp_path):
    """While the file is written the graph is frozen: adds and removals still count at once."""
    rng = np.random.default_rng(5)
    data = _unit(rng.normal(size=(300, DIM)))
    index = VectorIndex(DIM, {"dtype": "i8"})
    index.add(np.arange(200, dtype=np.uint64), for_index(data[:200], "i8"))
    index.freeze()
    index.add(np.arange(200, 300, dtype=np.uint64), for_index(data[200:], "i8"))
    index.remove([5, 250])
    size, crc = index.write(tmp_path / "g.usearch")
    assert len(index) == 298
    assert index.search(data[260][None], 1)[0][0][0] == 260  # the side table answers
    assert all(k not in (5, 250) for k, _ in index.search(data[5][None], 10)[0])
    index.thaw()
    assert len(index) == 298 and index.search(data[260][None], 1)[0][0][0] == 260
    rows = dict(zip(range(300), for_index(data, "i8"), strict=True))

    def fill(keys, out):  # what the database gives back: the file holds the graph, not the vectors
        for i, key in enumerate(keys.tolist()):
            if key in rows:
                out[i] = rows[key]

    saved = VectorIndex.read(tmp_path / "g.usearch", DIM, index.params, size, crc, fill)
    assert len(saved) == 200  # the file holds the frozen graph only
    assert saved.search(data[150][None], 1)[0][0][0] == 150


def test_a_float32_store_of_an_older_version_opens_and_searches(tmp_path):
    """The layout and rows earlier versions wrote (schema 1, float32 blobs, no counters)."""
    db = tmp_path / "store.db"
    rng = np.random.default_rng(11)
    old = _unit(rng.normal(size=(6, DIM)))
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
            CREATE TABLE requests (id TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT, policy TEXT,
                entities TEXT NOT NULL DEFAULT '[]', n_prompts INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL, revoked_at REAL);
            CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL REFERENCES
                requests(id), role TEXT NOT NULL, text TEXT, embedding BLOB NOT NULL);
            CREATE INDEX samples_request ON samples(request_id);
        """)
        raw.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('dim', ?)", (str(DIM),))
        raw.execute("INSERT INTO requests VALUES ('old1', 'privacy', NULL, NULL, '[]', 6, 1.0, NULL)")
        for i, v in enumerate(old):
            raw.execute("INSERT INTO samples (request_id, role, text, embedding) VALUES ('old1', ?, ?, ?)",
                        ("rewrite" if i == 0 else "augment", "old text" if i == 0 else None,
                         v.astype(np.float32).tobytes()))
    store = _open(db)
    try:
        assert store.index_open["how"] == "rebuilt"
        hit = store.search(old[0][None], k=1)[0][0]
        assert hit.sample.request_id == "old1" and hit.sample.text == "old text" and hit.score > 0.999
        assert np.array_equal(store.samples()[0].embedding, old[0])  # float32 rows are read exactly
        new = _requests(1, seed=12)
        store.add_requests(new)
        with contextlib.closing(sqlite3.connect(db)) as raw, raw:
            sizes = {r[0]: r[1] for r in raw.execute("SELECT request_id, max(length(embedding)) FROM samples "
                                                     "GROUP BY request_id")}
        assert sizes == {"old1": 4 * DIM, new[0][0].id: DIM + 4}  # new rows compact, old rows as they were
        assert store.search(new[0][1][0].embedding[None], k=1)[0][0].sample.request_id == new[0][0].id
        assert store.search(old[3][None], k=1)[0][0].sample.request_id == "old1"
        with contextlib.closing(sqlite3.connect(db)) as raw, raw:
            assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
    finally:
        store.close()


def test_bulk_add_is_batched_and_each_request_whole(tmp_path):
    store = _open(tmp_path / "store.db")
    try:
        items = _requests(50)
        bad = _requests(1, seed=3)[0]
        bad[0].id = items[0][0].id  # a duplicate id fails its batch, and only its batch
        ids = store.add_requests(items[:30], batch_rows=60)
        with pytest.raises(Exception, match="cannot add request"):
            store.add_requests(items[30:] + [bad], batch_rows=10_000)
        assert len(ids) == 30 and len(store.list_requests()) == 30
        per = {}
        for s in store.samples():
            per[s.request_id] = per.get(s.request_id, 0) + 1
        assert set(per.values()) == {6} and store.indexed_count() == 30 * 5
        sub = store.samples_of([items[2][0].id, items[5][0].id])
        assert {s.request_id for s in sub} == {items[2][0].id, items[5][0].id} and len(sub) == 12
    finally:
        store.close()


def test_admin_open_leaves_the_index_alone_and_the_next_open_catches_up(tmp_path):
    db = tmp_path / "store.db"
    items = _requests(8)
    store = _open(db)
    store.add_requests(items)
    store.close()
    admin = SQLiteStore(db, dim=None, watch=False)  # what `lethe forget list/revoke` opens
    assert admin.dim == DIM and not admin._loaded
    assert admin.revoke(items[1][0].id)
    admin.close()
    again = _open(db)
    try:
        assert again.index_open["how"] == "loaded and caught up"
        assert not again.live_here(items[1][0].id) and again.live_here(items[2][0].id)
    finally:
        again.close()


def test_index_files_are_owner_only(tmp_path):
    db = tmp_path / "store.db"
    store = _open(db)
    store.add_requests(_requests(3))
    store.close()
    if os.name == "posix":
        for f in [*_index_files(db), tmp_path / "store.db.index.json"]:
            assert f.stat().st_mode & 0o077 == 0, f.name


# -- PostgreSQL -----------------------------------------------------------------------------
DSN = os.environ.get("LETHE_TEST_PG_DSN")
needs_pg = pytest.mark.skipif(not DSN, reason="LETHE_TEST_PG_DSN not set (run: eval \"$(.ci/start_postgres.sh)\")")


@pytest.fixture()
def pg_schema():
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    from lethe.store.postgres import PostgresStore

    s = PostgresStore(DSN, dim=DIM, schema=name, listen=False)
    s.drop_all()
    s.close()


@needs_pg
def test_pg_cache_reopens_catches_up_and_rebuilds_when_corrupt(pg_schema, tmp_path):
    from lethe.store.postgres import PostgresStore

    def replica(**kw):
        return PostgresStore(DSN, dim=DIM, schema=pg_schema, listen=False, index_dir=tmp_path / "idx",
                             index=HNSW, **kw)

    items = _requests(20)
    a = replica()
    a.add_requests(items, batch_rows=40)
    expected = _answers(a, _queries())
    a.close()
    b = replica()
    try:
        assert b.index_open["how"] == "loaded" and b._rebuilds == 0 and _answers(b, _queries()) == expected
    finally:
        b.close()
    writer = PostgresStore(DSN, dim=DIM, schema=pg_schema, listen=False)  # no cache: another replica
    extra = _requests(1, seed=9)
    writer.add_request(*extra[0])
    writer.revoke(items[0][0].id)
    writer.close()
    c = replica()
    try:
        assert c.index_open["how"] == "loaded and caught up"
        assert c.live_here(extra[0][0].id) and not c.live_here(items[0][0].id)
        assert c.search(extra[0][1][0].embedding[None], k=1)[0][0].sample.request_id == extra[0][0].id
    finally:
        c.close()
    graph = next((tmp_path / "idx").glob("*.usearch"))
    blob = bytearray(graph.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    graph.write_bytes(bytes(blob))
    d = replica()
    try:
        assert d.index_open["how"] == "rebuilt" and d.live_here(extra[0][0].id)
    finally:
        d.close()


@needs_pg
def test_pg_replica_keeps_its_state_through_notifications(pg_schema, tmp_path):
    """Counted notifications keep a listening replica's database state known, so it can save any time."""
    import time

    from lethe.store.postgres import PostgresStore

    a = PostgresStore(DSN, dim=DIM, schema=pg_schema)
    b = PostgresStore(DSN, dim=DIM, schema=pg_schema, index_dir=tmp_path / "b", poll_interval_s=3600)
    try:
        items = _requests(3)
        for req, samples in items:
            a.add_request(req, samples)
        a.revoke(items[1][0].id)
        t0 = time.monotonic()
        # the replica applies a change, then records the state it reached: wait for both, up to the
        # writer's last change (a notification may still be on its way when the data already shows)
        want = a._live.state["changes"]  # type: ignore[index]

        def caught_up() -> bool:
            state = b._live.state
            return (not b.live_here(items[1][0].id) and b.live_here(items[2][0].id) and state is not None
                    and state["changes"] == want)

        while not caught_up():
            assert time.monotonic() - t0 < 30, f"replica b did not follow (state {b._live.state}, want {want})"
            time.sleep(0.01)
        assert b.save_index()
    finally:
        a.close()
        b.close()


def test_searches_while_requests_come_and_go(tmp_path):
    """A search racing a revoke (or a save) answers with what is live, and never fails."""
    import threading

    store = _open(tmp_path / "store.db")
    try:
        items = _requests(30)
        store.add_requests(items[:10])
        errors: list[BaseException] = []
        stop = threading.Event()

        def searcher() -> None:
            q = _queries(8)
            while not stop.is_set():
                try:
                    for row in store.search(q, k=10):
                        assert all(m.sample.embedding.shape == (DIM,) for m in row)
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads:
            t.start()
        for req, samples in items[10:]:
            store.add_request(req, samples)
            store.revoke(req.id)
            store.save_index()
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        assert store.live_count() == 10 and store.indexed_count() == 50
    finally:
        store.close()


def test_the_index_file_holds_the_graph_and_the_database_the_vectors(tmp_path):
    """One copy of every vector on disk: the file is usearch's save without its row matrix."""
    db = tmp_path / "store.db"
    store = _open(db)
    store.add_requests(_requests(40))
    store.close()
    graph = _index_files(db)[0]
    rows = 40 * 5
    again = _open(db)
    try:
        assert again.index_open["how"] == "loaded"
        whole = len(again._live.index._index.save())  # usearch's own file of the same graph
        assert graph.stat().st_size == whole - 8 - rows * DIM  # without the int8 rows and their 8-byte header
        got = again._live.index.get([int(k) for k in again._live.index.keys()[:10]])
        assert np.abs(got).max() > 0  # the rows came back from the database
    finally:
        again.close()


def test_an_index_file_of_the_earlier_format_still_opens(tmp_path):
    """Format 1 files (vectors inside the usearch file) load as they are, without a rebuild."""
    db = tmp_path / "store.db"
    store = _open(db)
    store.add_requests(_requests(30))
    expected = _answers(store, _queries())
    store.close()
    graph = _index_files(db)[0]
    reopened = _open(db)
    reopened._live.index._index.save(str(graph))  # the whole file, as earlier versions wrote it
    reopened.close()
    record_path = tmp_path / "store.db.index.json"
    record = json.loads(record_path.read_text())
    from lethe.store.index import file_crc32
    record.update(format=1, size=graph.stat().st_size, crc32=file_crc32(graph))
    record_path.write_text(json.dumps(record))
    old = _open(db)
    try:
        assert old.index_open["how"] == "loaded" and old._rebuilds == 0
        got = _answers(old, _queries())
        assert [[r[:4] for r in row] for row in got] == [[r[:4] for r in row] for row in expected]
        assert np.allclose([r[4] for row in got for r in row], [r[4] for row in expected for r in row], atol=1e-4)
    finally:
        old.close()


def test_a_graph_whose_samples_left_the_database_is_refused():
    """The filler refuses a key whose sample row is gone: the store then rebuilds from the database."""
    from lethe.store.index import IndexFileError
    from lethe.store.live import DatabaseFill

    blobs = [encode(v, "i8") for v in _unit(np.random.default_rng(1).normal(size=(3, DIM)))]
    keys = np.array([1, 2, 2**64 - 1, 7], dtype=np.uint64)  # a free slot, and sample 7 is not stored
    out = np.zeros((4, DIM), np.int8)
    with pytest.raises(IndexFileError, match="1 vectors of the index file are not in the database"):
        DatabaseFill(iter([(np.array([1, 2, 3]), blobs)]), DIM, "i8")(keys, out)
    out[:] = 0
    DatabaseFill(iter([(np.array([3, 2]), blobs[2:0:-1]), (np.array([1, 7]), [blobs[0], blobs[0]])]), DIM, "i8")(keys, out)
    assert (out[0] == np.frombuffer(blobs[0][:DIM], np.int8)).all() and (out[1] == np.frombuffer(blobs[1][:DIM], np.int8)).all()
    assert not out[2].any()
