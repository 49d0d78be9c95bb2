"""The ``nalaformer`` command: a thin dispatcher.

Each command lives in a module exposing ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``;
only the chosen command's module is imported, so ``nalaformer --help`` stays instant. An error after
argument parsing prints one line (``nalaformer COMMAND: error: ...``) and exits 1; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module implementing it
COMMANDS: dict[str, str] = {
    "demo": "nalaformer.analysis.demo",
    "train": "nalaformer.train.vision.train",
    "eval": "nalaformer.train.vision.evaluate",
    "predict": "nalaformer.train.vision.evaluate:predict",
    "train-lm": "nalaformer.train.lm.train",
    "eval-lm": "nalaformer.train.lm.evaluate",
    "bench": "nalaformer.bench",
    "analyze": "nalaformer.analyze_command",
    "reproduce": "nalaformer.reproduce.command",
}


def _load(name: str):
    """The object implementing a command: ``module`` or ``module:attribute``."""
    module_name, _, attr = COMMANDS[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def _command_parser(name: str, module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"nalaformer {name}", description=module.HELP)
    module.add_arguments(parser)
    if not any("--debug" in action.option_strings for action in parser._actions):
        parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
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
    try:
        return int(module.run(args) or 0)
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"nalaformer {argv[0]}: error: {exc or type(exc).__name__}  (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
