#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the demo: constrained generation over a real tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
. .venv/bin/activate
python examples/regex_demo.py "$@"
