from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("LETHE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip(f"benchmark data not found at {SHARED} (set LETHE_SHARED_DATA)")
    return SHARED


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    return tmp_path / "lethe-home"


@pytest.fixture(scope="module")
def embedder():
    """The shipped MiniLM embedder (ONNX), or a skip naming why it cannot load."""
    from lethe.backends import get_embedder

    try:
        return get_embedder()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MiniLM embedder unavailable: {exc}")
