#!/usr/bin/env bash
# The receiver's generating LLM on a GPU: vLLM's OpenAI-compatible server.
#
# rxd config (LlmDescriberConfig):  kind = "llm"
#                                   [server] base_url = "http://127.0.0.1:8002/v1", model = "rxd-llm"
# Needs the GPU build of vLLM (`pip install vllm`, in its own venv). Override any variable from the environment.
set -euo pipefail

MODEL="${MODEL:-Qwen/Qwen2.5-7B-Instruct}"    # or Qwen/Qwen2.5-1.5B-Instruct on a small GPU
PORT="${PORT:-8002}"
GPU_MEM="${GPU_MEM:-0.45}"                     # share of GPU memory; 0.45 leaves room for the txd VLM beside it

# Descriptions are one sentence from a one-line prompt: a short context suffices, and many sequences batch.
# --generation-config vllm: the request's sampling settings rule, not the model's defaults.
exec vllm serve "$MODEL" \
    --served-model-name rxd-llm \
    --host "${HOST:-127.0.0.1}" --port "$PORT" \
    --max-model-len 2048 \
    --max-num-seqs 128 \
    --gpu-memory-utilization "$GPU_MEM" \
    --structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}' \
    --generation-config vllm \
    "$@"
