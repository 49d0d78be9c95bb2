"""LM tests: transformers is required; tiny models run single-threaded."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

# transformers' own common tests on our LM: they run inside a transformers tests tree
# (tests/models/lm/run_transformers_upstream.sh), not in this suite
collect_ignore = ["transformers_upstream"]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield
