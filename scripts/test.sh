#!/usr/bin/env bash
# The project's checks, as CI runs them: stub drift, lint, types, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
python scripts/gen_proto.py --check
ruff check .
ruff format --check .
mypy
python -m pytest "$@"
