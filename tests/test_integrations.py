"""`import nalaformer` registers its model families with timm in either import order, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("order", ["nalaformer first", "timm first"])
def test_timm_registration_in_any_order(order):
    imports = "import nalaformer, timm" if order == "nalaformer first" else "import timm, nalaformer"
    code = (f"{imports}; names = timm.list_models('nalaformer_*'); print(names); "
            "m = timm.create_model('nalaformer_xt', num_classes=3); print(type(m).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("nalaformer_xt", "nalaformer_t", "nalaformer_s", "nalaformer_b", "nalaformer_l",
                 "nalaformer_t_paper"):
        assert f"'{name}'" in proc.stdout
    assert "Warning" not in proc.stderr


def test_cli_lists_and_dispatches_commands(capsys):
    from nalaformer.cli import main

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    for command in ("demo", "train", "eval", "predict", "train-lm", "eval-lm", "bench"):
        assert f"  {command} " in listed
    assert main(["no-such-command"]) == 2
    import pytest

    with pytest.raises(SystemExit) as exit_info:  # argparse's --help of a nested benchmark
        main(["bench", "lm", "--help"])
    assert exit_info.value.code == 0 and "nalaformer bench lm" in capsys.readouterr().out


def test_cli_errors_are_one_line_unless_debug(tmp_path, capsys):
    import pytest

    from nalaformer.cli import main

    assert main(["eval", "--run", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"nalaformer eval: error: --run: {tmp_path} is not a training run (no run.json)"
                                    "  (--debug shows the traceback)")
    assert "Traceback" not in captured.err + captured.out
    with pytest.raises(FileNotFoundError, match="--run: .* is not a training run"):
        main(["eval", "--run", str(tmp_path), "--debug"])
