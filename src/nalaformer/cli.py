"""The ``nalaformer`` command: a thin dispatcher.

Each command lives in a module exposing ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen command's module is imported, so ``nalaformer --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module implementing it
COMMANDS: dict[str, str] = {
    "demo": "nalaformer.analysis.demo",
    "train": "nalaformer.train.vision",
    "eval": "nalaformer.train.vision_eval",
    "predict": "nalaformer.train.vision_eval:predict",
    "train-lm": "nalaformer.train.lm",
    "eval-lm": "nalaformer.train.lm_evaluate",
    "bench": "nalaformer.bench",
    "analyze": "nalaformer.analyze_command",
}


def _load(name: str):
    """The object implementing a command: ``module`` or ``module:attribute``."""
    module_name, _, attr = COMMANDS[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def _command_parser(name: str, module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"nalaformer {name}", description=module.HELP)
    module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: nalaformer COMMAND [options]   (nalaformer COMMAND --help for its options)", "",
                 "commands:"]
        for name in COMMANDS:
            lines.append(f"  {name:<12} {getattr(_load(name), 'HELP', '')}")
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nnalaformer: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    module = _load(argv[0])
    args = _command_parser(argv[0], module).parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
