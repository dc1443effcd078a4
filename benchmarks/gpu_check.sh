#!/usr/bin/env bash
# The GPU check in one command, on a GPU machine (see benchmarks/README.md, "GPU check"):
# installs what the machine's image lacks from the wheels carried in benchmarks/wheels
# (`make gpu-check-prep` builds them here, with the data subset in benchmarks/gpu_data),
# then runs benchmarks/gpu_check.py (at most --budget seconds, default 500) and writes
# benchmarks/results/<date>-<gpu>.json, copied with this log to $OUT when that is set.
# Arguments go to gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SEGLAB_GPU_SITE:-/tmp/seglab_site}
if compgen -G "benchmarks/wheels/*.whl" >/dev/null; then
    # --target: the image's own packages stay untouched; ours come first on the path.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" benchmarks/wheels/*.whl \
        || { echo "gpu_check: installing benchmarks/wheels failed" >&2; exit 3; }
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "gpu_check: no wheels in benchmarks/wheels (make gpu-check-prep); using the installed packages" >&2
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
if [ -n "${OUT:-}" ]; then
    "$PY" benchmarks/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
else
    "$PY" benchmarks/gpu_check.py "$@"
fi
