"""The load orders of constraints.py: attainment never rises with QPS or request size."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.errors import ConfigError
from greenllm.scheduler import RowKey
from greenllm.scheduler.constraints import load_order, monotone_in_load, monotone_in_qps

SIZES = [(24, 24), (160, 140), (510, 357)]
QPS = [0.5, 1.0, 2.0, 4.0]


def _rows(sizes=SIZES, qps=QPS, apps=("sharegpt",)) -> list[RowKey]:
    return [RowKey(a, i, o, q) for a in apps for (i, o) in sizes for q in qps]


def _below(a: RowKey, b: RowKey) -> bool:
    """a carries no more load than b (and is a different row)."""
    same_app = a != b and a.application == b.application
    return (
        same_app
        and a.qps <= b.qps
        and a.input_tokens <= b.input_tokens
        and (a.output_tokens <= b.output_tokens)
    )


@st.composite
def monotone_problem(draw):
    """A truth that falls with load (QPS and size), a random mask, random fills."""
    rows = _rows(apps=("a", "b"))
    n_cfg = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    capacity = rng.uniform(0.3, 6.0, (2, n_cfg))  # per application
    load = np.array([k.qps * (k.input_tokens + k.output_tokens) / 200 for k in rows])
    app = np.array([k.application == "b" for k in rows], dtype=int)
    truth = 1.0 / (1.0 + (load[:, None] / capacity[app]) ** 3)
    observed = rng.random(truth.shape) < draw(st.floats(0.0, 1.0))
    noisy = np.where(observed, truth, rng.random(truth.shape))
    return rows, truth, observed, noisy


@settings(max_examples=40, deadline=None)
@given(monotone_problem())
def test_clamped_values_fall_with_load_and_keep_measurements(problem) -> None:
    rows, truth, observed, values = problem
    out = monotone_in_load(values, observed, rows)
    assert np.array_equal(out[observed], truth[observed])  # measured cells never change
    for a, b in itertools.permutations(range(len(rows)), 2):
        if _below(rows[a], rows[b]):
            assert np.all(out[a] >= out[b] - 1e-12), (rows[a], rows[b])
    # filled cells stay within the range the measurements allow
    assert np.all((out >= values.min() - 1e-12) & (out <= values.max() + 1e-12))


@settings(max_examples=25, deadline=None)
@given(monotone_problem())
def test_rising_quantities_by_symmetry_and_qps_axis_is_weaker(problem) -> None:
    rows, _, observed, values = problem
    up = monotone_in_load(values, observed, rows, decreasing=False)
    assert np.allclose(up, -monotone_in_load(-values, observed, rows))
    by_qps = monotone_in_qps(values, observed, rows)
    assert np.allclose(by_qps, monotone_in_load(values, observed, rows, axes="qps"))
    assert np.array_equal(by_qps[observed], values[observed])


def test_saturated_row_cannot_extrapolate_a_high_attainment() -> None:
    rows = _rows(sizes=[(160, 140)])
    values = np.array([[0.003], [0.96], [0.001], [0.0]])  # CF filled 0.96 at 1 QPS
    observed = np.array([[True], [False], [True], [True]])
    out = monotone_in_qps(values, observed, rows)
    assert out[1, 0] == pytest.approx(0.003)  # capped by the measured 0.003 at 0.5 QPS
    assert np.array_equal(out[observed], values[observed])


def test_request_size_is_a_second_axis() -> None:
    rows = [RowKey("sharegpt", 24, 24, 2.0), RowKey("sharegpt", 510, 357, 2.0),
            RowKey("sharegpt", 510, 100, 2.0)]  # fmt: skip
    values = np.array([[0.4], [0.95], [0.97]])  # larger requests filled above the small one
    observed = np.array([[True], [False], [False]])
    out = monotone_in_load(values, observed, rows)
    assert out[1, 0] == pytest.approx(0.4)  # more prompt and output tokens: capped
    assert out[2, 0] == pytest.approx(0.4)
    # along QPS only, different sizes are not ordered
    assert np.array_equal(monotone_in_qps(values, observed, rows), values)
    # sizes that are not ordered componentwise do not constrain each other
    rows2 = [RowKey("x", 100, 500, 1.0), RowKey("x", 500, 100, 1.0)]
    vals2 = np.array([[0.1], [0.9]])
    assert np.array_equal(monotone_in_load(vals2, np.array([[True], [False]]), rows2), vals2)


def test_measured_floor_wins_a_conflict_and_other_applications_are_independent() -> None:
    rows = _rows(sizes=[(160, 140)], apps=("a", "b"))
    values = np.full((8, 1), 0.5)
    observed = np.zeros((8, 1), dtype=bool)
    observed[[0, 3, 4], 0] = True
    values[0, 0], values[3, 0], values[4, 0] = 0.2, 0.3, 0.9  # a: 0.2 @0.5 but 0.3 @4 (noise)
    out = monotone_in_load(values, observed, rows)
    assert out[1, 0] == pytest.approx(0.3) and out[2, 0] == pytest.approx(0.3)
    assert np.all(out[5:, 0] <= 0.9) and out[5, 0] == pytest.approx(0.5)  # b capped by its own


def test_load_order_is_a_linear_extension() -> None:
    rows = _rows(apps=("a", "b"))[::-1]
    for order in load_order(rows):
        pos = {int(i): k for k, i in enumerate(order)}
        for i, j in itertools.permutations(order.tolist(), 2):
            if _below(rows[i], rows[j]):
                assert pos[i] < pos[j]


def test_bad_input_is_a_config_error() -> None:
    rows = _rows()
    with pytest.raises(ConfigError, match="do not match"):
        monotone_in_load(np.zeros((3, 2)), np.zeros((3, 2), bool), rows)
    with pytest.raises(ConfigError, match="axes"):
        load_order(rows, axes="size")  # type: ignore[arg-type]
