"""``torchrun --nproc_per_node N -m nalaformer.train.lm ...``: the ``train-lm`` command."""

import argparse
import sys

from .train import HELP, add_arguments, run

_parser = argparse.ArgumentParser(prog="nalaformer train-lm", description=HELP)
add_arguments(_parser)
sys.exit(run(_parser.parse_args()))
