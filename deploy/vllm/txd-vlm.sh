#!/usr/bin/env bash
# The transmitter's understanding VLM on a GPU: vLLM's OpenAI-compatible server with JSON-schema outputs.
#
# txd config (VlmConfig):   [understanding] kind = "vlm"
#                           [understanding.server] base_url = "http://127.0.0.1:8001/v1", model = "txd-vlm"
# Needs the GPU build of vLLM (`pip install vllm`, in its own venv). Override any variable from the environment.
set -euo pipefail

MODEL="${MODEL:-OpenGVLab/InternVL3-8B}"     # or Qwen/Qwen2.5-VL-7B-Instruct, HuggingFaceM4/Idefics3-8B-Llama3
PORT="${PORT:-8001}"
GPU_MEM="${GPU_MEM:-0.45}"                    # share of GPU memory; 0.45 leaves room for the rxd LLM beside it

# Person crops are small: one image per request, and one 448 px tile (InternVL) or ~450 image tokens
# (Qwen2.5-VL) are plenty. Several requests in flight batch on the GPU (txd's max_concurrency).
case "$MODEL" in
    *InternVL*) MM_KWARGS='{"max_dynamic_patch": 1}'; EXTRA=(--trust-remote-code) ;;
    *Qwen2*VL*) MM_KWARGS='{"max_pixels": 200704}'; EXTRA=() ;;
    *)          MM_KWARGS='{}'; EXTRA=() ;;
esac

# --generation-config vllm: the request's sampling settings rule, not the model's defaults.
exec vllm serve "$MODEL" \
    --served-model-name txd-vlm \
    --host "${HOST:-127.0.0.1}" --port "$PORT" \
    --max-model-len 4096 \
    --max-num-seqs 64 \
    --gpu-memory-utilization "$GPU_MEM" \
    --limit-mm-per-prompt '{"image": 1}' \
    --mm-processor-kwargs "$MM_KWARGS" \
    --structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}' \
    --generation-config vllm \
    "${EXTRA[@]}" "$@"
