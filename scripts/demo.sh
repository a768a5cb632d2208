#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demos: a regex over a real tokenizer, then JSON from a real model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
. .venv/bin/activate
python examples/regex_demo.py
# A JSON object from a real model (SmolLM2-135M on the CPU), valid against its schema by construction.
python examples/generate_json_demo.py "$@"
