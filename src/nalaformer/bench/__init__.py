"""Benchmarks, one module each (``attention``, ``vision``, ``lm``); ``nalaformer bench NAME [options]``.

Each measures our code and its baselines in one run on one device and prints a table of ratios;
results are recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib

HELP = "benchmarks: `nalaformer bench attention|vision|lm [options]` (each: --help)"
NAMES = ("attention", "vision", "lm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=NAMES, help="which benchmark")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")


def main_of(name: str):
    """The ``main(argv) -> int`` of benchmark ``name``."""
    module = importlib.import_module(f"{__name__}.{name}")
    return module.main


def run(args: argparse.Namespace) -> int:
    return int(main_of(args.name)(args.options) or 0)
