#!/usr/bin/env bash
# Run timm's own model tests (tests/test_models.py from the sdist of the installed timm) on the
# nalaformer models. The sdist is downloaded / extracted once into .cache/timm-src (git-ignored).
#
#   tests/models/run_timm_upstream.sh [extra pytest args]
#   PYTHON=/path/to/python TIMM_UPSTREAM_TIMEOUT=900 tests/models/run_timm_upstream.sh
#
# Runs every marker except torchscript (base, forward, backward, cfg, features, fxforward, fxbackward,
# and the unmarked pruning-contract test); the unmarked test that scripts an FX graph is TorchScript too
# and is left out (docs/vision.md says why). timm checks forward_intermediates / pruning only for the
# modules in the test file's FEAT_INTER_FILTERS: a patched copy adds `nalaformer` there so those tests
# exercise our models too. The attention kinds focused and polarity run as test-only models
# nalaformer_xt_focused / nalaformer_xt_polarity (forward, backward and the two FX tests: timm's cfg and
# feature tests only list models with a default cfg). Expect 62 tests (6 models x 9 + 2 x 4), a few minutes
# on 2 CPU cores.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/tests/models/upstream_python.sh"
CACHE="$ROOT/.cache/timm-src"
# attention kinds tested as test-only models nalaformer_xt_KIND (the kinds that add parameters and layers
# to the frame; the others differ from nala/softmax only in the mixer's arithmetic, tested in tests/layers)
ZOO_KINDS="${TIMM_UPSTREAM_KINDS:-'focused', 'polarity',}"
TIMEOUT_S="${TIMM_UPSTREAM_TIMEOUT:-900}"

version="$("$PYTHON" -c 'import timm; print(timm.__version__)')"
src="$CACHE/timm-$version"
if [ ! -f "$src/tests/test_models.py" ]; then
    mkdir -p "$CACHE"
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps --dest "$CACHE" "timm==$version"
    tar -xzf "$CACHE/timm-$version.tar.gz" -C "$CACHE"
fi

# A run directory of our own: the patched test file, timm's conftest, a conftest that registers the
# nalaformer models before the parametrize lists are built at collection, and a pytest.ini (so that
# neither our pyproject's nor timm's pytest settings apply) declaring timm's markers.
run="$CACHE/run-$version"
rm -rf "$run"
mkdir -p "$run"
"$PYTHON" - "$src/tests/test_models.py" "$run/test_models.py" <<'PY'
import re
import sys

text = open(sys.argv[1]).read()
patched, hits = re.subn(r"^FEAT_INTER_FILTERS = \[", "FEAT_INTER_FILTERS = ['nalaformer', ", text, count=1, flags=re.M)
if hits != 1:
    sys.exit("run_timm_upstream.sh: FEAT_INTER_FILTERS not found in timm's test_models.py; update the patch")
open(sys.argv[2], "w").write(patched)
PY
cp "$src/tests/conftest.py" "$run/conftest_timm.py"
cat > "$run/conftest.py" <<'PY'
from timm.models import model_entrypoint, register_model

import nalaformer.models.vision.nalaformer  # noqa: F401  registers the nalaformer_* timm models
from conftest_timm import *  # noqa: F401,F403  timm's own fixtures


def _zoo_variant(kind):
    """A test-only entrypoint: NaLaFormer-XT with every stage of attention kind ``kind``."""
    def entry(pretrained=False, **kwargs):
        return model_entrypoint("nalaformer_xt")(pretrained, **dict(kwargs, attn_types=kind))
    entry.__name__ = f"nalaformer_xt_{kind}"
    return register_model(entry)


for _kind in ZOO_KINDS:
    _zoo_variant(_kind)
PY
sed -i "1i ZOO_KINDS = ($ZOO_KINDS)" "$run/conftest.py"
cat > "$run/pytest.ini" <<'INI'
[pytest]
markers =
    base
    forward
    backward
    cfg
    cfg_nonstd
    torchscript
    features
    fxforward
    fxbackward
    timeout(seconds): per-test limit (enforced only with pytest-timeout)
INI

cd "$run"
exec timeout "$TIMEOUT_S" "$PYTHON" -m pytest test_models.py -p no:cacheprovider -q -rs \
    -m "not torchscript" -k "nalaformer and not fx_torchscript" "$@"
