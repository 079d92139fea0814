"""The generating agent's model backends: an LLM server (vLLM) and a local transformers model."""
