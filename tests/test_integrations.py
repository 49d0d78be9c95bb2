"""`import nalaformer` registers its model families with timm in either import order, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("order", ["nalaformer first", "timm first"])
def test_timm_registration_in_any_order(order):
    imports = "import nalaformer, timm" if order == "nalaformer first" else "import timm, nalaformer"
    code = (f"{imports}; names = timm.list_models('nalaformer_*'); print(names); "
            "m = timm.create_model('nalaformer_xt', num_classes=3); print(type(m).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("nalaformer_xt", "nalaformer_t", "nalaformer_s", "nalaformer_b", "nalaformer_l",
                 "nalaformer_t_paper"):
        assert f"'{name}'" in proc.stdout
    assert "Warning" not in proc.stderr
