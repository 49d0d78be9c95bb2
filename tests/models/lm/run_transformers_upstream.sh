#!/usr/bin/env bash
# Run transformers' own common model tests (tests/causal_lm_tester.py: ModelTesterMixin,
# GenerationTesterMixin, PipelineTesterMixin, ...) on the NaLa LM, the way a model inside transformers is
# tested: our tests/models/lm/transformers_upstream/test_modeling_nala.py becomes
# tests/models/nala/test_modeling_nala.py of an unpacked transformers tests tree.
#
#   tests/models/lm/run_transformers_upstream.sh [extra pytest args]
#   TRANSFORMERS_TESTS_TGZ=/path/transformers-tests-SHA.tgz PYTHON=/path/to/python tests/models/lm/run_transformers_upstream.sh
#
# The tree (transformers' tests/ and utils/ at a commit not newer than the installed release; the PyPI
# sdist lacks causal_lm_tester.py and generation/) comes from $TRANSFORMERS_TESTS_TGZ, else the newest
# ../shared/third_party/transformers-tests-*.tgz beside this checkout; without one the run is skipped with
# a message (exit 0). It is unpacked into .cache/transformers-tests (git-ignored), fresh each run. Names the
# tree imports that the installed release lacks get a placeholder that raises if called (a conftest at the
# tree's root; /work/shared/third_party/README.md lists the known gaps). Needs the dev extras (httpx,
# parameterized, pytest-xdist). About 2.5 minutes on 2 busy CPU cores (2 workers).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
source "$ROOT/tests/models/upstream_python.sh"
TIMEOUT_S="${TRANSFORMERS_UPSTREAM_TIMEOUT:-900}"
WORKERS="${TRANSFORMERS_UPSTREAM_WORKERS:-2}"

tgz="${TRANSFORMERS_TESTS_TGZ:-}"
if [ -z "$tgz" ]; then
    tgz="$(ls -t "$ROOT"/../shared/third_party/transformers-tests-*.tgz 2>/dev/null | head -n 1 || true)"
fi
if [ -z "$tgz" ] || [ ! -f "$tgz" ]; then
    echo "run_transformers_upstream.sh: SKIPPED: no transformers tests tree (set TRANSFORMERS_TESTS_TGZ to a"
    echo "  transformers-tests-*.tgz, or put one in ../shared/third_party/ beside this checkout)"
    exit 0
fi
"$PYTHON" -c 'import httpx, parameterized, xdist' 2>/dev/null || {
    echo "run_transformers_upstream.sh: transformers' tests need httpx, parameterized and pytest-xdist:" \
         "pip install -e '.[dev]'" >&2
    exit 1
}

run="$ROOT/.cache/transformers-tests/$(basename "$tgz" .tgz)"
rm -rf "$run"
mkdir -p "$run/src"
tar -xzf "$tgz" -C "$run"
# tests/test_pipeline_mixin.py imports the library from the tree's src/transformers: the installed release
ln -s "$("$PYTHON" -c 'import os, transformers; print(os.path.dirname(transformers.__file__))')" "$run/src/transformers"
mkdir -p "$run/tests/models/nala"
touch "$run/tests/models/__init__.py" "$run/tests/models/nala/__init__.py"
cp "$ROOT/tests/models/lm/transformers_upstream/test_modeling_nala.py" "$run/tests/models/nala/"
cat > "$run/conftest.py" <<'PY'
"""Names this tests tree imports that the installed transformers release lacks (test material, not the
library): the testers' shared size defaults (our tester gives every size itself), and FSDP/tensor-parallel
helpers whose tests do not apply to a model without those plans. A placeholder raises if it is ever called."""
import importlib

import transformers.testing_utils

if not hasattr(transformers.testing_utils, "_TEXT_MODEL_TESTER_DEFAULTS"):
    transformers.testing_utils._TEXT_MODEL_TESTER_DEFAULTS = {}


def _missing(name):
    def placeholder(*args, **kwargs):
        raise NotImplementedError(f"{name} is not in this transformers release")
    return placeholder


for module_name, name in [("transformers.integrations.tensor_parallel", "_get_parameter_tp_plan"),
                          ("transformers.distributed.fsdp", "expand_fsdp_plan"),
                          ("transformers.distributed.utils", "load_optimizer_distributed"),
                          ("transformers.distributed.utils", "save_optimizer_distributed")]:
    module = importlib.import_module(module_name)
    if not hasattr(module, name):
        setattr(module, name, _missing(f"{module_name}.{name}"))
PY
# our own pytest.ini: neither our pyproject's nor transformers' pytest settings apply (unknown markers warn)
printf '[pytest]\nfilterwarnings =\n    ignore::pytest.PytestUnknownMarkWarning\n' > "$run/pytest.ini"

cd "$run"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec timeout "$TIMEOUT_S" "$PYTHON" -m pytest tests/models/nala/test_modeling_nala.py -p no:cacheprovider -q \
    -rfEs -n "$WORKERS" "$@"
