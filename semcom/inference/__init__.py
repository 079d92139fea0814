"""Inference backends shared by the daemons: the OpenAI-compatible HTTP client used for vLLM servers."""

from semcom.inference.openai_client import (
    ChatResult,
    LoopThread,
    OpenAIBackendConfig,
    OpenAIClient,
    TokenLogprob,
    api_key_from,
    image_part,
    jpeg_data_url,
    json_schema_format,
)

__all__ = [
    "ChatResult",
    "LoopThread",
    "OpenAIBackendConfig",
    "OpenAIClient",
    "TokenLogprob",
    "api_key_from",
    "image_part",
    "jpeg_data_url",
    "json_schema_format",
]
