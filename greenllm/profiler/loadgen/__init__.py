"""Open-loop load generation: Poisson or trace arrivals against a Backend or an OpenAI-compatible
streaming endpoint (``vllm serve``), with the prompts, the SSE client and what a run returns."""

from greenllm.profiler.loadgen.dispatch import DispatchOutcome, dispatch_open_loop
from greenllm.profiler.loadgen.http import Aborter, OpenAIEndpoint, StreamRecord, stream_request
from greenllm.profiler.loadgen.prompts import (
    PromptSource,
    resolve_prompts,
    synthetic_prompt,
    truncate_prompt,
)
from greenllm.profiler.loadgen.result import LoadInterrupted, LoadResult
from greenllm.profiler.loadgen.run import LAG_WARN_S, build_requests, run_load
from greenllm.profiler.loadgen.sse import SSEDecoder, is_token_chunk

__all__ = [
    "LAG_WARN_S",
    "Aborter",
    "DispatchOutcome",
    "LoadInterrupted",
    "LoadResult",
    "OpenAIEndpoint",
    "PromptSource",
    "SSEDecoder",
    "StreamRecord",
    "build_requests",
    "dispatch_open_loop",
    "is_token_chunk",
    "resolve_prompts",
    "run_load",
    "stream_request",
    "synthetic_prompt",
    "truncate_prompt",
]
