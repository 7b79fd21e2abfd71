"""Every number that enters the workloads API is checked where it enters, and the work a call
may ask for is bounded: finite in-range inputs give finite request sets; NaN, inf, out-of-range
values, wrong types and absurd sizes give ConfigError, never a numpy error or a huge allocation.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.config import RequestSize, RequestSizeDistribution
from greenllm.errors import ConfigError
from greenllm.units import MAX_QPS, MAX_REQUESTS, MAX_TIME_S, MAX_TOKENS, MIN_QPS
from greenllm.workloads import (
    RequestSet,
    approx_token_count,
    get_application,
    load_trace,
    poisson_arrivals_s,
    workload,
)

BAD_NUMBERS = [float("nan"), float("inf"), -float("inf"), -5.0, 0.0, 1e-320, 1e-300, 1e308,
               10**400, "5", None, "", True, [1.0]]  # fmt: skip
BAD_COUNTS = [-1, MAX_REQUESTS + 1, 99_999_999_999, 10**400, 5.0, "5", None, True, float("nan")]
SIZE = RequestSize(input_tokens=100, output_tokens=50)
DIST = get_application("sharegpt").distribution


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_poisson_refuses_bad_rates(bad: object) -> None:
    with pytest.raises(ConfigError, match="qps"):
        poisson_arrivals_s(bad, n=10)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="qps"):
        RequestSet.poisson(bad, SIZE, duration_s=10.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_poisson_refuses_bad_durations(bad: object) -> None:
    if isinstance(bad, float) and 0 < bad <= 1.0:
        return  # 1e-320 s and 1e-300 s are valid (empty) windows
    with pytest.raises(ConfigError, match="duration_s"):
        poisson_arrivals_s(1.0, duration_s=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_COUNTS, ids=repr)
def test_poisson_refuses_bad_counts(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"\bn\b"):
        poisson_arrivals_s(1.0, n=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\bn\b"):
        DIST.sample(bad)  # type: ignore[arg-type]
    if bad is not None:  # n=None: the whole trace once
        with pytest.raises(ConfigError, match=r"\bn\b"):
            load_trace("conversation", n=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None, True, 10**400 * -1])
def test_bad_seeds_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        poisson_arrivals_s(1.0, n=3, seed=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seed"):
        load_trace("code", n=3, seed=bad)  # type: ignore[arg-type]


def test_the_issue_examples_are_bounded() -> None:
    with pytest.raises(ConfigError, match=r"qps = 1e-300: .*1e-06 <= qps"):
        poisson_arrivals_s(1e-300, n=10)
    with pytest.raises(ConfigError, match="10000000"):
        poisson_arrivals_s(1.0, n=99_999_999_999)
    with pytest.raises(ConfigError, match="expected arrivals"):
        poisson_arrivals_s(MAX_QPS, duration_s=MAX_TIME_S)
    with pytest.raises(ConfigError, match="requests"):
        load_trace("conversation", duration_s=MAX_TIME_S)
    with pytest.raises(ConfigError, match="qps"):
        load_trace("summarization", qps=1e-300, n=3)


@settings(max_examples=40, deadline=None)
@given(st.floats(MIN_QPS, MAX_QPS), st.integers(0, 2000), st.integers(0, 2**32))
def test_in_range_arrivals_are_finite(qps: float, n: int, seed: int) -> None:
    times = poisson_arrivals_s(qps, n=n, seed=seed)
    assert len(times) == n and np.all(np.isfinite(times)) and np.all(np.diff(times) >= 0)


@settings(max_examples=40, deadline=None)
@given(st.floats(MIN_QPS, 100.0), st.floats(1e-3, 1000.0), st.integers(0, 2**32))
def test_in_range_request_sets_are_finite(qps: float, duration: float, seed: int) -> None:
    reqs = RequestSet.poisson(qps, DIST, duration_s=duration, seed=seed)
    assert np.all(np.isfinite(reqs.arrival_s)) and np.all(reqs.arrival_s < duration)
    assert np.all(reqs.input_tokens >= 1) and np.all(reqs.output_tokens <= MAX_TOKENS)


@pytest.mark.parametrize(
    ("column", "bad"),
    [("arrival_s", [0.0, float("nan")]), ("arrival_s", [0.0, float("inf")]),
     ("arrival_s", [-1.0, 0.0]), ("arrival_s", [0.0, 1e300]), ("arrival_s", ["a", "b"]),
     ("arrival_s", None), ("input_tokens", [1, float("nan")]), ("input_tokens", [1, 0]),
     ("input_tokens", [1, 1.5]), ("input_tokens", [1, MAX_TOKENS + 1]),
     ("input_tokens", ["5", "6"]), ("output_tokens", [1, 10**400]), ("output_tokens", [1, -3]),
     ("output_tokens", [[1], [2]])],
)  # fmt: skip
def test_request_sets_refuse_bad_columns(column: str, bad: object) -> None:
    good: dict[str, object] = {"arrival_s": [0.0, 1.0], "input_tokens": [5, 6],
                               "output_tokens": [7, 8]}  # fmt: skip
    good[column] = bad
    with pytest.raises(ConfigError, match=column):
        RequestSet(**good)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["ab", ("a", 5), 5, ("a",)])
def test_request_sets_refuse_bad_prompts(bad: object) -> None:
    with pytest.raises(ConfigError, match="prompts"):
        RequestSet([0.0, 1.0], [5, 6], [7, 8], bad)  # type: ignore[arg-type]


def test_poisson_refuses_a_bad_size() -> None:
    with pytest.raises(ConfigError, match="size"):
        RequestSet.poisson(1.0, (100, 50), n=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_load_trace_refuses_bad_numbers(bad: object) -> None:
    if bad is None:
        return  # None: the trace's own rate, the whole trace, no cap
    with pytest.raises(ConfigError, match="qps"):
        load_trace("conversation", qps=bad, n=5)  # type: ignore[arg-type]
    if not (isinstance(bad, float) and 0 < bad <= 1.0):
        with pytest.raises(ConfigError, match="duration_s"):
            load_trace("conversation", duration_s=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_input_tokens"):
        load_trace("code", n=3, max_input_tokens=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 5, ["conversation"], "", "x" * 100_000])
def test_load_trace_refuses_bad_names(bad: object) -> None:
    with pytest.raises(ConfigError, match="trace"):
        load_trace(bad, n=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_workload_refuses_bad_rates(bad: object) -> None:
    with pytest.raises(ConfigError, match="qps"):
        workload("sharegpt", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 5, b"def f(): pass"])
def test_token_count_refuses_non_text(bad: object) -> None:
    with pytest.raises(ConfigError, match="text"):
        approx_token_count(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 5, "", "p99", ["p50"]])
def test_bad_size_names_are_config_errors(bad: object) -> None:
    with pytest.raises(ConfigError):
        get_application("sharegpt").size(bad)  # type: ignore[arg-type]


def test_distribution_samples_are_in_range() -> None:
    dist = RequestSizeDistribution(p25=SIZE, p50=SIZE, p75=SIZE)
    assert dist.sample(0) == []
    assert all(s == SIZE for s in dist.sample(5))


# Fuzzing every public function ------------------------------------------------------------------
FUZZ_VALUES = [float("nan"), float("inf"), -float("inf"), -5.0, 1e-320, 1e308, 10**400, "5",
               None, "", "x" * 200_000, [1, "a"], [[1], [1, 2]], {}, b"\xff", True, object(),
               -1, 99_999_999_999, []]  # fmt: skip
FUZZ_DEFAULTS = {"name": "conversation", "app": "sharegpt", "qps": 1.0, "text": "hello"}


def _public_functions() -> list[tuple[str, object]]:
    import inspect

    import greenllm.workloads as workloads

    out: list[tuple[str, object]] = []
    for name in workloads.__all__:
        obj = getattr(workloads, name)
        if inspect.isfunction(obj) and name not in ("humaneval_prompts", "humaneval_requests"):
            out.append((f"greenllm.workloads.{name}", obj))
    out += [("RequestSizeDistribution.quantile", DIST.quantile),
            ("RequestSizeDistribution.sample", DIST.sample),
            ("Application.size", get_application("sharegpt").size),
            ("RequestSet.poisson", RequestSet.poisson)]  # fmt: skip
    return out


@pytest.mark.parametrize(("label", "func"), _public_functions(), ids=lambda x: str(x)[:60])
def test_no_public_function_raises_a_foreign_error(label: str, func) -> None:
    """Each argument in turn gets every fuzz value, the others a plain default (and n=3 so the
    call stays small): the call succeeds or raises ConfigError, never a numpy/Python error."""
    import inspect

    from greenllm.errors import GreenLLMError

    params = [p for p in inspect.signature(func).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    base: dict[str, object] = {p.name: FUZZ_DEFAULTS.get(p.name, 1.0) for p in params
                               if p.default is inspect.Parameter.empty}  # fmt: skip
    if "size" in base and label == "RequestSet.poisson":
        base["size"] = SIZE
    if "n" in {p.name for p in params} and label != "RequestSizeDistribution.sample":
        base.setdefault("n", 3)
    for p in params:
        for value in FUZZ_VALUES:
            kwargs = {**base, p.name: value}
            if p.name == "duration_s":
                kwargs.pop("n", None)
            try:
                func(**kwargs)
            except GreenLLMError:
                pass
            except Exception as err:
                pytest.fail(f"{label}({p.name}={value!r:.40}) raised {type(err).__name__}: {err}")
