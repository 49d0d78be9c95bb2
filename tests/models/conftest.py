"""Fixtures for the timm NaLaFormer models: the golden tensors and the released state dict."""

from __future__ import annotations

import json

import pytest

from tests.conftest import GOLDEN_DIR
from tests.models.helpers import to_our_kwargs

try:  # registers the timm models (until `import nalaformer` does); the LM tests below here need no timm
    import nalaformer.models.vision.nalaformer  # noqa: F401
except ImportError:  # pragma: no cover - timm missing: the vision test modules skip themselves
    pass


@pytest.fixture(scope="session")
def golden():
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = GOLDEN_DIR / "official_a.safetensors"
    if not path.exists():
        pytest.skip(f"golden tensors not found at {path}")
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    return {"tensors": load_file(str(path)), "config": to_our_kwargs(config["model"])}


@pytest.fixture(scope="session")
def official_state_dict_path():
    path = GOLDEN_DIR / "official_a_state_dict.pth"
    if not path.exists():
        pytest.skip(f"golden state dict not found at {path}")
    return path
