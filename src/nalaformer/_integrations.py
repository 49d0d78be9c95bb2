"""Register nalaformer's model families with timm / transformers without importing them eagerly.

``import nalaformer`` stays light: if timm (or transformers) is already imported, the family is
registered at once; otherwise a post-import hook registers it the moment the library is imported,
so ``import nalaformer; import timm; timm.create_model("nalaformer_t")`` works in any order.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings

# library -> module of ours whose import registers the family with it
FAMILIES: dict[str, str] = {
    "timm": "nalaformer.models.vision.nalaformer",
    "transformers": "nalaformer.models.lm",
}

_pending: dict[str, str] = {}


def _register(library: str) -> None:
    module = _pending.pop(library, None)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a missing dependency of ours: say so
            warnings.warn(f"nalaformer: could not register its {library} models ({exc!r})", RuntimeWarning,
                          stacklevel=2)
    except Exception as exc:  # never break the user's import of the library itself
        warnings.warn(f"nalaformer: could not register its {library} models ({exc!r})", RuntimeWarning, stacklevel=2)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of a pending library to register after it runs."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module, _original=original, _name=fullname):
            _original(module)
            _register(_name)

        loader.exec_module = exec_module  # this loader instance serves only this module
        return spec


_finder = _PostImportFinder()


def install() -> None:
    """Register every family now (library already imported) or when its library gets imported."""
    for library, module in FAMILIES.items():
        _pending[library] = module
        if library in sys.modules:
            _register(library)
    if any(lib in _pending for lib in FAMILIES) and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
