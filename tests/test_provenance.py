"""Results carry what can change a number: machine, libraries, llama.cpp build, model hashes."""

from __future__ import annotations

import hashlib
import json
import os

from lethe import provenance as P


def test_machine_names_cpu_flags_and_cores():
    m = P.machine()
    assert m["logical_cores"] >= 1 and 1 <= m["usable_cores"] <= m["logical_cores"]
    assert set(m["cpu_flags"]) <= set(P.CPU_FLAGS) and m["python"].count(".") == 2


def test_file_hash_is_exact_cached_and_follows_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights" * 1000)
    assert P.file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    cached = json.loads((tmp_path / "cache" / "sha256.json").read_text())
    assert cached[str(f.resolve())]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    f.write_bytes(b"other weights")
    os.utime(f, ns=(1, 1))  # a different stamp even on a coarse clock
    assert P.file_sha256(f) == hashlib.sha256(b"other weights").hexdigest()


def test_folder_hash_covers_names_and_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    a = tmp_path / "a"
    a.mkdir()
    (a / "adapter_config.json").write_text("{}")
    (a / "adapter_model.safetensors").write_bytes(b"x" * 10)
    first = P.file_sha256(a)
    (a / "adapter_model.safetensors").write_bytes(b"y" * 10)
    os.utime(a / "adapter_model.safetensors", ns=(2, 2))
    assert P.file_sha256(a) != first


def test_provenance_block(tmp_path, monkeypatch):
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LETHE_THREADS", "2")
    f = tmp_path / "m.gguf"
    f.write_bytes(b"gguf")
    p = P.provenance([f, None, tmp_path / "absent"], llama_cpp=False, batch_size=8, seed=0)
    assert p["models_sha256"] == {str(f): hashlib.sha256(b"gguf").hexdigest()}
    assert p["settings"] == {"threads": 2, "batch_size": 8, "seed": 0}
    assert p["libraries"]["numpy"] and "lethe-unlearn" in p["libraries"]
