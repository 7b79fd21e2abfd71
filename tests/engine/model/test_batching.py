"""Continuous batching: rows joining mid-decode give what one-at-a-time decoding gives."""

from __future__ import annotations

from typing import Any

from tests.engine.helpers import reference
from tests.extras import require

torch = require("torch")

from greenllm.engine import (
    SamplingParams,
)
from greenllm.engine.model.batching import BatchDecoder
from greenllm.engine.stats import WorkerCounters
from greenllm.engine.worker.context import SeqOutput


class _Sink:
    def __init__(self) -> None:
        self.tokens: dict[int, list[int]] = {}
        self.finished: list[int] = []

    def emit(self, rid: int, tokens: list[int], times: list[float]) -> None:
        self.tokens.setdefault(rid, []).extend(tokens)

    def finish(self, rid: int, reason: str, *args: Any) -> None:
        self.finished.append(rid)


def test_batch_decoder_continuous_batching_equals_one_at_a_time(tiny_target: Any,
                                                                tiny_prompts: Any) -> None:
    prompts = [p[: 4 + 2 * i] for i, p in enumerate(tiny_prompts[:4])]  # different lengths
    lengths = [20, 9, 15, 12]
    refs = [reference(tiny_target, [p], n)[0] for p, n in zip(prompts, lengths, strict=True)]
    counters, sink = WorkerCounters("standalone"), _Sink()
    decoder = BatchDecoder(tiny_target, counters, max_batch=8)
    for rid, (p, n) in enumerate(zip(prompts, lengths, strict=True)):
        out = SeqOutput(rid, SamplingParams(max_tokens=n))
        decoder.admit_prompt(out, p, None, sink)  # joins while others are mid-decode
        decoder.step(sink)
    while decoder.active:
        decoder.step(sink)
    assert [sink.tokens[i] for i in range(4)] == refs
    assert sorted(sink.finished) == [0, 1, 2, 3]
    assert counters.busy_s > 0 and counters.forward_passes >= max(lengths)
