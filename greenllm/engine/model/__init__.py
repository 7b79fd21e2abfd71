"""Models and decoding: model names (the one alias table), pretrained weights offline, drafts,
the per-sequence KV cache, continuous batching, sampling, the rejection-sampling verifier and
single-process loops. Public names are exported by :mod:`greenllm.engine`."""

__all__: list[str] = []
