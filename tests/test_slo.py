"""SLO attainment: any in-range timings give fractions in [0, 1]; bad inputs give ConfigError."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.config import SLO
from greenllm.errors import ConfigError
from greenllm.slo import slo_attainment, slo_attainment_per_token

SLO_ = SLO(ttft_s=0.2, tpot_s=0.05)
seconds = st.floats(0.0, 1e6, allow_nan=False)


@given(st.lists(st.tuples(seconds, seconds | st.just(math.nan)), max_size=30),
       st.integers(0, 10**6))  # fmt: skip
def test_attainment_is_a_fraction(rows: list[tuple[float, float]], n_failed: int) -> None:
    ttft = [r[0] for r in rows]
    tpot = [r[1] for r in rows]
    for value in slo_attainment(ttft, tpot, SLO_, n_failed=n_failed):
        assert 0.0 <= value <= 1.0
    gaps = [np.array([] if math.isnan(t) else [t, t]) for t in tpot]
    for value in slo_attainment_per_token(ttft, gaps, SLO_, n_failed=n_failed):
        assert 0.0 <= value <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"ttft_s": "5"}, {"ttft_s": None}, {"ttft_s": [0.1, "a"]}, {"ttft_s": [[0.1], [0.1, 0.2]]},
     {"ttft_s": [math.nan, 0.1]}, {"tpot_s": [0.1]}, {"tpot_s": {"a": 1}},
     {"slo": None}, {"slo": (0.2, 0.05)}, {"n_failed": -1}, {"n_failed": "1"},
     {"n_failed": 1.5}, {"n_failed": None}, {"n_failed": True}],
    ids=repr,
)  # fmt: skip
def test_bad_inputs_are_config_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"ttft_s": [0.1, 0.3], "tpot_s": [0.01, 0.1], "slo": SLO_,
                               "n_failed": 0, **kwargs}  # fmt: skip
    with pytest.raises(ConfigError):
        slo_attainment(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"ttft_s": "5"}, {"gaps_s": "ab"}, {"gaps_s": 5}, {"gaps_s": [[0.1], ["x"]]},
     {"gaps_s": [[0.1], [math.nan]]}, {"gaps_s": [[0.1], [-1.0]]}, {"slo": None},
     {"fraction": math.nan}, {"fraction": math.inf}, {"fraction": 0.0}, {"fraction": "1"},
     {"n_failed": -1}, {"n_failed": 10**400 * -1}],
    ids=repr,
)  # fmt: skip
def test_bad_per_token_inputs_are_config_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"ttft_s": [0.1, 0.3], "gaps_s": [[0.01], [0.1, 0.02]],
                               "slo": SLO_, "n_failed": 0, **kwargs}  # fmt: skip
    with pytest.raises(ConfigError):
        slo_attainment_per_token(**args)  # type: ignore[arg-type]
