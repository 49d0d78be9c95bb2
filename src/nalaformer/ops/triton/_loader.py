"""Load the kernel module compiled (CUDA) or interpreted (CPU, ``TRITON_INTERPRET=1``).

``triton.jit`` decides between a compiled and an interpreted function when the decorator runs, so
the kernel source is executed as two independent module objects, each with ``TRITON_INTERPRET``
pinned while it is executed. The two never mix, and the process environment is restored at once.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

_SOURCE = Path(__file__).with_name("_kernels.py")


def interpreter_enabled() -> bool:
    """True when the caller opted into the Triton interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load_kernels(interpret: bool, source: Path = _SOURCE, package: str = "nalaformer.ops.triton") -> ModuleType:
    """The kernel module at ``source`` (NaLa's by default), interpreted or compiled, loaded once per form."""
    name = f"{package}.{source.stem}_{'interpreted' if interpret else 'compiled'}"
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    import triton  # noqa: F401  (the real package; fails loudly when it is missing)

    spec = importlib.util.spec_from_file_location(name, source)
    mod = importlib.util.module_from_spec(spec)
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        spec.loader.exec_module(mod)
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old
    sys.modules[name] = mod
    return mod
