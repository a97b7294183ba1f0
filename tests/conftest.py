"""Shared fixtures: where ../shared lives, and the generated reference models (cached, never in git)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LRP_CLI_SHARED", ROOT.parent / "shared")).resolve()
REFERENCE = SHARED / "reference"
CACHE = Path(os.environ.get("LRP_CLI_TEST_CACHE", ROOT / ".cache")).resolve()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def reference_models_dir(*models: str) -> Path:
    """Generate (once) the random-weight reference caffemodels into the cache and return that folder.

    The folder mirrors ``shared/reference/models`` plus the generated ``*.caffemodel`` files and
    ``imagenet_mean_const.binaryproto``; every generated file is checked against SHA256SUMS.
    """
    out = CACHE / "reference-models"
    sums = dict(
        reversed(line.split()) for line in (REFERENCE / "models" / "SHA256SUMS").read_text().splitlines() if line
    )
    wanted = [m for m in models]
    missing = []
    for model in wanted:
        rel = next(k for k in sums if k.startswith(model + "/"))
        path = out / rel
        if not path.exists() or _sha256(path) != sums[rel]:
            missing.append(model)
    if missing or not (out / "imagenet_mean_const.binaryproto").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(SHARED / "tools" / "make_reference_models.py"), str(out), *(missing or wanted[:1])],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return out


@pytest.fixture(scope="session")
def shared() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def reference() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return reference_models_dir("tiny")


@pytest.fixture(scope="session")
def caffenet_model_dir() -> Path:
    return reference_models_dir("caffenet")


@pytest.fixture(scope="session")
def googlenet_model_dir() -> Path:
    return reference_models_dir("googlenet")
