"""rejection_sample / rejection_sample_lean: exact target distribution (chi-square), greedy
exactness, validation, lean == full; speculative_generate == autoregressive_generate (greedy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from greenllm.errors import ConfigError
from tests.extras import require

torch = require("torch")

from greenllm.engine import (
    SamplingParams,
    autoregressive_generate,
    rejection_sample,
    rejection_sample_lean,
    speculative_generate,
    verify,
    verify_lean,
)

TRIALS = 10_000


def _dirichlet(rng: np.random.Generator, rows: int, vocab: int) -> np.ndarray:
    return rng.dirichlet(np.full(vocab, 0.7), size=rows)


def _case(kind: str, k: int, vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(draft rows (k, V), target rows (k+1, V)) with the draft equal, disjoint or random."""
    rng = np.random.default_rng(seed)
    target = _dirichlet(rng, k + 1, vocab)
    if kind == "equal":
        draft = target[:k].copy()
    elif kind == "disjoint":  # target on the first half of the vocab, draft on the second
        half = vocab // 2
        target[:, half:] = 0
        target /= target.sum(1, keepdims=True)
        draft = np.zeros((k, vocab))
        draft[:, half:] = _dirichlet(rng, k, vocab - half)
    else:
        draft = _dirichlet(rng, k, vocab)
    return draft, target


def _run(draft: np.ndarray, target: np.ndarray, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    vocab = draft.shape[1]
    proposals = np.stack([rng.choice(vocab, size=TRIALS, p=row) for row in draft], axis=1)
    return [rejection_sample(tokens, draft, target, rng) for tokens in proposals]


def _assert_matches(samples: list[int], probs: np.ndarray) -> None:
    counts = np.bincount(samples, minlength=probs.size)
    support = probs > 0
    assert counts[~support].sum() == 0, "a token outside the target's support was emitted"
    expected = probs[support] / probs[support].sum() * counts.sum()
    assert chisquare(counts[support], expected).pvalue > 1e-3


@pytest.mark.parametrize(
    ("kind", "k", "vocab", "seed"),
    [("equal", 1, 5, 0), ("disjoint", 2, 8, 1), ("random", 1, 6, 2), ("random", 4, 7, 3)],
)
def test_first_token_follows_the_target(kind: str, k: int, vocab: int, seed: int) -> None:
    draft, target = _case(kind, k, vocab, seed)
    outputs = _run(draft, target, seed + 100)
    _assert_matches([o[0] for o in outputs], target[0])
    lengths = np.bincount([len(o) for o in outputs], minlength=k + 2)
    if kind == "equal":
        assert lengths[k + 1] == TRIALS  # an identical draft is always fully accepted
    if kind == "disjoint":
        assert lengths[1] == TRIALS  # a disjoint draft is always rejected at once
    assert lengths[0] == 0 and lengths[k + 2 :].sum() == 0


def test_token_after_an_acceptance_follows_the_next_target_row() -> None:
    draft, target = _case("random", 3, 6, seed=4)
    outputs = _run(draft, target, seed=5)
    second = [o[1] for o in outputs if len(o) >= 2]
    assert len(second) > 3000
    _assert_matches(second, target[1])
    # the acceptance rate at position 0 is sum_x min(p, q)
    accepted = sum(len(o) >= 2 for o in outputs) / TRIALS
    assert abs(accepted - np.minimum(draft[0], target[0]).sum()) < 0.02


def test_greedy_rows_are_exact_and_consume_no_randomness() -> None:
    def one_hot(ids: list[int], vocab: int = 6) -> np.ndarray:
        return np.eye(vocab)[ids]

    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    draft_tokens = [3, 1, 4]
    draft = one_hot(draft_tokens)
    assert rejection_sample(draft_tokens, draft, one_hot([3, 1, 5, 2]), g) == [3, 1, 5]
    assert rejection_sample(draft_tokens, draft, one_hot([0, 1, 4, 2]), g) == [0]
    assert rejection_sample(draft_tokens, draft, one_hot([3, 1, 4, 2]), g) == [3, 1, 4, 2]
    assert torch.equal(g.get_state(), state)
    result = verify(draft_tokens, draft, one_hot([3, 1, 5, 2]), g)
    assert (result.n_accepted, result.n_proposed, result.rejected) == (2, 3, True)
    assert rejection_sample([], np.zeros((0, 6)), one_hot([2]), g) == [2]


@pytest.mark.parametrize(
    ("tokens", "draft", "target", "match"),
    [
        ([0], np.full((1, 4), 0.25), np.full((1, 4), 0.25), r"target_probs has shape \(1, 4\)"),
        ([0], np.full((2, 4), 0.25), np.full((2, 4), 0.25), r"draft_probs has shape \(2, 4\)"),
        ([0], np.full((1, 3), 1 / 3), np.full((2, 4), 0.25), r"shape \(1, 3\): expected \(1, 4\)"),
        ([[0]], np.full((1, 4), 0.25), np.full((2, 4), 0.25), "draft_tokens has shape"),
        ([0.5], np.full((1, 4), 0.25), np.full((2, 4), 0.25), "integer token ids"),
        ([7], np.full((1, 4), 0.25), np.full((2, 4), 0.25), r"draft_tokens\[0\] = 7"),
        ([0], np.full((1, 4), 0.3), np.full((2, 4), 0.25), "row 0 sums to 1.2"),
        ([0], [[1.5, -0.5, 0, 0]], np.full((2, 4), 0.25), "negative or non-finite"),
        ([0], [[0, 1.0, 0, 0]], np.full((2, 4), 0.25), "draft probability 0"),
    ],
)
def test_validation_names_the_bad_value(tokens: Any, draft: Any, target: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        rejection_sample(tokens, draft, target)


def test_accepts_torch_tensors() -> None:
    draft = torch.tensor([[0.5, 0.5, 0.0]])
    target = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert rejection_sample(torch.tensor([1]), draft, target) == [2]


@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(2, 9))
def test_lean_equals_full_on_identical_generator_states(seed: int, k: int, vocab: int) -> None:
    rng = np.random.default_rng(seed)
    draft, target = _dirichlet(rng, k, vocab), _dirichlet(rng, k + 1, vocab)
    tokens = [int(rng.choice(vocab, p=row)) for row in draft]
    g_full, g_lean = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    calls: list[int] = []

    def fetch(i: int) -> np.ndarray:
        calls.append(i)
        return draft[i]

    full = verify(tokens, draft, target, g_full)
    lean = verify_lean(tokens, draft[np.arange(k), tokens], target, fetch, g_lean)
    assert lean == full
    assert torch.equal(g_full.get_state(), g_lean.get_state())
    assert calls == ([full.n_accepted] if full.rejected else [])
    # the residual/bonus token lies where the target puts mass
    last = full.tokens[-1]
    assert target[full.n_accepted, last] > (draft[full.n_accepted, last] if full.rejected else 0)


def test_lean_validation() -> None:
    draft = np.array([[0.5, 0.5, 0.0]])
    target = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    with pytest.raises(ConfigError, match="one probability p_i"):
        rejection_sample_lean([1], [0.5, 0.5], target, lambda i: draft[i])
    with pytest.raises(ConfigError, match="must come from one row"):
        rejection_sample_lean([1], [0.4], target, lambda i: draft[i])
    assert rejection_sample_lean([1], [0.5], target, lambda i: draft[i]) == [2]


def _double(model: Any) -> Any:
    import copy

    return copy.deepcopy(model).double()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculative_decoding_reproduces_the_target(
    tiny_target: Any, tiny_draft: Any, tiny_prompts: list[list[int]], k: int
) -> None:
    # float64 so one K+1-token forward and K+1 one-token forwards round identically
    target, draft = _double(tiny_target), _double(tiny_draft)
    params = SamplingParams(max_tokens=25)
    proposed = 0
    for prompt in tiny_prompts[:4]:
        ref = autoregressive_generate(target, prompt, params)
        for lean in (False, True):
            spec = speculative_generate(target, draft, prompt, k, params, lean=lean)
            assert spec.tokens == ref.tokens
            assert len(spec.token_times_s) == 25 and spec.finish_reason == "length"
            assert 0 <= spec.n_accepted <= spec.n_proposed
        proposed += spec.n_proposed
    assert proposed > 0
    # a draft identical to the target is always accepted: K tokens + a bonus per step
    same = speculative_generate(target, target, tiny_prompts[0], k, params)
    assert same.tokens == autoregressive_generate(target, tiny_prompts[0], params).tokens
    assert same.n_accepted == same.n_proposed and same.n_steps == -(-24 // (k + 1))


def test_stop_tokens_and_sampling_are_seeded(tiny_target: Any, tiny_draft: Any) -> None:
    prompt = [5, 6, 7, 8]
    ref = autoregressive_generate(tiny_target, prompt, SamplingParams(max_tokens=12))
    stop = ref.tokens[5]
    first = ref.tokens.index(stop)
    params = SamplingParams(max_tokens=12, stop_token_ids=(stop,))
    spec = speculative_generate(tiny_target, tiny_draft, prompt, 4, params)
    assert spec.tokens == ref.tokens[: first + 1] and spec.finish_reason == "stop"
    sampled = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=16, seed=3)
    a = speculative_generate(tiny_target, tiny_draft, prompt, 3, sampled)
    b = speculative_generate(tiny_target, tiny_draft, prompt, 3, sampled)
    assert a.tokens == b.tokens and len(a.tokens) == 16
    with pytest.raises(ConfigError, match="k=0"):
        speculative_generate(tiny_target, tiny_draft, prompt, 0, sampled)


@pytest.mark.slow
def test_sampled_speculative_decoding_matches_target_first_tokens(
    tiny_target: Any, tiny_draft: Any
) -> None:
    """Distribution of the first two generated tokens at temperature 0.3, top-p 0.95:
    speculative decoding vs the target's own probabilities (chi-square on the second token,
    whose draft proposal is verified)."""
    prompt = [9, 10, 11]
    params = SamplingParams(temperature=0.3, top_p=0.95, max_tokens=2)
    g = torch.Generator().manual_seed(0)
    from greenllm.engine import probs_from_logits

    with torch.inference_mode():
        first_logits = tiny_target(input_ids=torch.tensor([prompt])).logits[0, -1]

    p0 = probs_from_logits(first_logits, params).double().numpy()
    top = int(p0.argmax())
    seconds = []
    for _ in range(1500):
        out = speculative_generate(tiny_target, tiny_draft, prompt, 1, params, g)
        if out.tokens[0] == top:
            seconds.append(out.tokens[1])
    with torch.inference_mode():
        logits = tiny_target(input_ids=torch.tensor([[*prompt, top]])).logits[0, -1]
    probs = probs_from_logits(logits, params).double().numpy()
    # chi-square over the 8 likeliest tokens plus one cell for all the others
    cells = np.argsort(-probs)[:8]
    counts = np.array([seconds.count(int(c)) for c in cells] + [0])
    counts[-1] = len(seconds) - counts[:-1].sum()
    expected = np.append(probs[cells], 1 - probs[cells].sum()) * len(seconds)
    assert len(seconds) > 100
    assert chisquare(counts, expected).pvalue > 1e-3
