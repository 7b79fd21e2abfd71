"""The engine across real worker processes: DSD and DPD against target-only greedy decoding,
lean vs full probability bytes, DPD KV bytes, concurrency, seeded sampling."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.helpers import REF_MAX_TOKENS, run_async
from tests.extras import require

torch = require("torch")

from greenllm.engine import (
    Engine,
    SamplingParams,
)
from greenllm.engine.comm.transport import HEADER_BYTES
from greenllm.errors import ConfigError

VOCAB = 256
MAX_TOKENS = REF_MAX_TOKENS


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}


@pytest.mark.parametrize("k", [1, 3, 4])
def test_dsd_greedy_equals_target_only(dsd: Any, tiny_prompts: Any, refs: Any, k: int) -> None:
    before = dsd.stats()
    outs = dsd.generate_batch(tiny_prompts[:4], SamplingParams(max_tokens=MAX_TOKENS), k=k)
    after = dsd.stats()
    assert [list(o.tokens) for o in outs] == refs
    proposed = sum(o.proposed_tokens for o in outs)
    assert after.proposed_tokens - before.proposed_tokens == proposed > 0
    accepted = sum(o.accepted_tokens for o in outs)
    assert 0 < accepted < proposed  # the draft is right sometimes, not always
    assert after.accepted_tokens - before.accepted_tokens == accepted
    for o in outs:  # a step proposes <= k and emits accepted + 1; the last may be solo
        steps = after.verify_steps - before.verify_steps
        assert o.proposed_tokens <= k * steps
        assert o.finish_reason == "length" and len(o.tokens) == MAX_TOKENS


def test_dsd_overlap_off_same_output_and_probs_before_forward(
    dsd: Any, tiny_prompts: Any, refs: Any
) -> None:
    outs = dsd.generate_batch(
        tiny_prompts[:4], SamplingParams(max_tokens=MAX_TOKENS), overlap=False
    )
    assert [list(o.tokens) for o in outs] == refs


def test_dsd_lean_same_output_fewer_probability_bytes(
    dsd: Any, tiny_prompts: Any, refs: Any
) -> None:
    sp = SamplingParams(max_tokens=MAX_TOKENS)
    s0 = dsd.stats()
    full = dsd.generate_batch(tiny_prompts[:4], sp, lean=False)
    s1 = dsd.stats()
    lean = dsd.generate_batch(tiny_prompts[:4], sp, lean=True)
    s2 = dsd.stats()
    assert [list(o.tokens) for o in full] == [list(o.tokens) for o in lean] == refs
    full_proposed = s1.proposed_tokens - s0.proposed_tokens
    lean_proposed = s2.proposed_tokens - s1.proposed_tokens
    full_probs = _delta(s1.bytes_old_to_new, s0.bytes_old_to_new)["probs"]
    lean_probs = _delta(s2.bytes_old_to_new, s1.bytes_old_to_new)["probs"]
    fetches = s2.row_fetches - s1.row_fetches
    assert full_probs == full_proposed * VOCAB * 4  # K rows of V float32 per step
    assert lean_probs == lean_proposed * 4 + fetches * VOCAB * 4  # K floats + rejected rows
    assert 0 < fetches <= s2.verify_steps - s1.verify_steps
    assert lean_probs < full_probs
    ids = _delta(s2.bytes_old_to_new, s1.bytes_old_to_new)["ids"]
    assert ids == lean_proposed * 8  # int64 ids, sent first


def test_dsd_sampling_seeded_reproducible(dsd: Any, tiny_prompts: Any) -> None:
    sp = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=MAX_TOKENS, seed=7)
    a = dsd.generate_batch(tiny_prompts[:3], sp)
    b = dsd.generate_batch(tiny_prompts[:3], sp)
    c = dsd.generate_batch(
        tiny_prompts[:3], SamplingParams(temperature=1.0, max_tokens=MAX_TOKENS, seed=8)
    )
    assert [o.tokens for o in a] == [o.tokens for o in b]
    assert [o.tokens for o in a] != [o.tokens for o in c]
    for o in a + c:
        assert len(o.tokens) == MAX_TOKENS and all(0 <= t < VOCAB for t in o.tokens)
        assert 0 <= o.accepted_tokens <= o.proposed_tokens > 0


def test_dsd_request_output_times(dsd: Any, tiny_prompts: Any) -> None:
    out = run_async(dsd.generate(tiny_prompts[0], SamplingParams(max_tokens=8)))
    assert out.arrival_s <= out.first_token_s <= out.finish_s
    assert list(out.token_times_s) == sorted(out.token_times_s)
    assert 0 <= out.ttft_s < 30 and out.tpot_s >= 0 and out.text == ""
    assert out.prompt_tokens == tuple(tiny_prompts[0])
    with pytest.raises(ConfigError, match="no tokenizer"):
        run_async(dsd.generate("text needs a tokenizer", SamplingParams(max_tokens=2)))
    stats = dsd.stats()
    assert stats.busy_s("new") > 0 and stats.busy_s("old") > 0
    assert {w.role for w in stats.workers} == {"dsd_target", "dsd_draft"}


def test_dpd_greedy_equals_target_only_and_kv_bytes(
    dpd: Any, tiny_target: Any, tiny_prompts: Any, refs: Any
) -> None:
    cfg = tiny_target.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    for prompt, ref in zip(tiny_prompts[:2], refs[:2], strict=True):
        before = dpd.stats()
        out = run_async(dpd.generate(prompt, SamplingParams(max_tokens=MAX_TOKENS)))
        after = dpd.stats()
        assert list(out.tokens) == ref
        kv = _delta(after.bytes_new_to_old, before.bytes_new_to_old)
        layer_bytes = cfg.num_key_value_heads * len(prompt) * head_dim * 4
        assert kv["kv"] == cfg.num_hidden_layers * 2 * layer_bytes
        assert kv["header"] == 3 * HEADER_BYTES  # ADMIT, then one chunk: keys, values
    stats = dpd.stats()
    assert stats.busy_s("new") > 0 and stats.busy_s("old") > 0
    assert stats.bytes_old_to_new.get("kv", 0) == 0


def test_dpd_concurrent_requests_batched(dpd: Any, tiny_prompts: Any, refs: Any) -> None:
    prompts = tiny_prompts[:4]
    outs = dpd.generate_batch(prompts, SamplingParams(max_tokens=MAX_TOKENS))
    assert [list(o.tokens) for o in outs] == refs
    assert len({o.request_id for o in outs}) == 4


def test_dpd_sampling_seeded_matches_across_runs(dpd: Any, tiny_prompts: Any) -> None:
    sp = SamplingParams(temperature=0.8, max_tokens=12, seed=3)
    a = run_async(dpd.generate(tiny_prompts[1], sp))
    b = run_async(dpd.generate(tiny_prompts[1], sp))
    assert a.tokens == b.tokens and all(0 <= t < VOCAB for t in a.tokens)


@pytest.mark.slow
def test_standalone_and_spec_decode_equal_target_only(
    tiny_dirs: dict[str, str], tiny_prompts: Any, refs: Any
) -> None:
    sp = SamplingParams(max_tokens=MAX_TOKENS)
    with Engine("standalone", tiny_dirs["target"]) as engine:
        outs = engine.generate_batch(tiny_prompts[:4], sp)
        assert [list(o.tokens) for o in outs] == refs
    with Engine("spec_decode", tiny_dirs["target"], tiny_dirs["draft"], k=3) as engine:
        outs = engine.generate_batch(tiny_prompts[:4], sp)
        assert [list(o.tokens) for o in outs] == refs
        assert engine.stats().proposed_tokens == sum(o.proposed_tokens for o in outs) > 0


def test_engine_rejects_bad_configuration(tiny_dirs: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="mode='nope'"):
        Engine("nope", tiny_dirs["target"])
    with pytest.raises(ConfigError, match="needs a draft"):
        Engine("dsd", tiny_dirs["target"])
    with pytest.raises(ConfigError, match="k=0"):
        Engine("dsd", tiny_dirs["target"], tiny_dirs["draft"], k=0)
