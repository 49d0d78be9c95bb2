"""Fixtures shared with tests/train."""

from tests.train.conftest import fashion_dir  # noqa: F401  (a session fixture: synthetic Fashion-MNIST files)
