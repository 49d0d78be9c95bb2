"""Progress bars: tqdm on the main process's terminal, silent elsewhere (logs, non-zero ranks)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int, desc: str, unit: str = "img", enabled: bool = True, refresh_every: int = 1) -> tqdm:
    """A tqdm bar over ``total`` steps; ``update(n)`` counts ``unit``s, ``set_postfix`` shows metrics.

    Disabled (every call a no-op) when ``enabled`` is False or stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit="step", disable=not enabled or not sys.stderr.isatty(),
                miniters=max(refresh_every, 1), dynamic_ncols=True, leave=True)
