"""LM tests: transformers is required; tiny models run single-threaded."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
