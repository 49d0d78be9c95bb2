# Sourced by the upstream-suite scripts (run_timm_upstream.sh, lm/run_transformers_upstream.sh) with ROOT set:
# sets PYTHON to $PYTHON, else the checkout's .venv interpreter, else python3, as an absolute path (the
# scripts change directory before running it).
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
case "$PYTHON" in
    */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
esac
