"""Algorithm 1 (the SLO-aware scheduler) and its uncertainty-margin variant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from greenllm.errors import ConfigError
from greenllm.scheduler import CompletionResult, Decision, decide, schedule, schedule_with_margin


@st.composite
def problems(draw, max_rows: int = 12, max_cols: int = 8):
    """(carbon, attainment, target): ties are likely (values drawn from small grids)."""
    n = draw(st.integers(1, max_rows))
    m = draw(st.integers(1, max_cols))
    carbon = draw(hnp.arrays(np.float64, (n, m), elements=st.sampled_from([0.0, 1.0, 2.0, 3.5])))
    att = draw(
        hnp.arrays(np.float64, (n, m), elements=st.sampled_from([0.0, 0.5, 0.85, 0.9, 0.95, 1.0]))
    )
    target = draw(st.sampled_from([0.0, 0.5, 0.9, 0.95, 1.0]))
    return carbon, att, target


def reference(carbon, att, target, priority="slo", default=0) -> list[int]:
    """Algorithm 1 written as the paper's loop, one workload at a time."""
    out = []
    for c_row, a_row in zip(carbon, att, strict=True):
        feasible = [j for j in range(len(c_row)) if a_row[j] >= target]  # line 2
        if feasible:  # lines 3-4, ties: lower carbon then lower index
            out.append(min(feasible, key=lambda j: (c_row[j], j)))
        elif priority == "slo":  # lines 9-10, ties: lower carbon then lower index
            out.append(min(range(len(c_row)), key=lambda j: (-a_row[j], c_row[j], j)))
        else:  # line 12
            out.append(default)
    return out


def test_hand_built_example_line_by_line() -> None:
    # rows = workloads, columns = configurations 0..3
    carbon = np.array(
        [
            [4.0, 2.0, 3.0, 1.0],  # w0
            [4.0, 2.0, 3.0, 1.0],  # w1
            [1.0, 1.0, 5.0, 9.0],  # w2
            [5.0, 6.0, 7.0, 8.0],  # w3
            [3.0, 2.0, 2.0, 9.0],  # w4
        ]
    )
    att = np.array(
        [
            [0.99, 0.95, 0.91, 0.50],  # w0: feasible {0, 1, 2}; carbons 4, 2, 3 -> config 1
            [0.99, 0.80, 0.91, 0.89],  # w1: feasible {0, 2}; carbons 4, 3 -> config 2
            [0.90, 0.90, 0.95, 0.20],  # w2: feasible {0, 1, 2}; carbons 1, 1, 5 -> tie -> 0
            [0.10, 0.70, 0.70, 0.30],  # w3: none feasible; max att 0.70 at {1, 2} -> carbon 6
            [0.80, 0.85, 0.85, 0.10],  # w4: none feasible; max 0.85 at {1, 2}; carbon tie -> 1
        ]
    )
    # target 0.9: line 2 builds Feasible_j, line 4 takes argmin carbon, line 10 argmax att
    np.testing.assert_array_equal(schedule(carbon, att, 0.9, "slo"), [1, 2, 0, 1, 1])
    # priority "default": w3 and w4 take the default configuration (line 12)
    np.testing.assert_array_equal(schedule(carbon, att, 0.9, "default", 3), [1, 2, 0, 3, 3])
    # target 0: everything is feasible, so the plain argmin of carbon (ties to lower index)
    np.testing.assert_array_equal(schedule(carbon, att, 0.0), [3, 3, 0, 0, 1])
    # target 1: nothing is feasible (0.99 < 1), every row falls back to max attainment
    np.testing.assert_array_equal(schedule(carbon, att, 1.0), [0, 0, 2, 1, 1])


@settings(max_examples=300, deadline=None)
@given(p=problems(), priority=st.sampled_from(["slo", "default"]), data=st.data())
def test_matches_reference_loop(p, priority, data) -> None:
    carbon, att, target = p
    default = data.draw(st.integers(0, carbon.shape[1] - 1))
    got = schedule(carbon, att, target, priority, default)
    assert got.dtype.kind == "i" and got.shape == (carbon.shape[0],)
    assert got.tolist() == reference(carbon, att, target, priority, default)


@settings(max_examples=200, deadline=None)
@given(p=problems())
def test_never_infeasible_when_feasible_exists_and_minimal_carbon(p) -> None:
    carbon, att, target = p
    got = schedule(carbon, att, target)
    rows = np.arange(carbon.shape[0])
    feasible = att >= target
    has = feasible.any(axis=1)
    assert feasible[rows[has], got[has]].all()
    best = np.where(feasible, carbon, np.inf).min(axis=1)
    np.testing.assert_array_equal(carbon[rows[has], got[has]], best[has])
    # fallback rows: maximal attainment, then minimal carbon among those
    top = att.max(axis=1)
    np.testing.assert_array_equal(att[rows[~has], got[~has]], top[~has])


@settings(max_examples=150, deadline=None)
@given(p=problems(), data=st.data())
def test_permutation_equivariance(p, data) -> None:
    carbon, att, target = p
    n, m = carbon.shape
    rperm = np.array(data.draw(st.permutations(range(n))))
    cperm = np.array(data.draw(st.permutations(range(m))))
    base = schedule(carbon, att, target)
    # rows: permuting the workloads permutes the answer exactly
    np.testing.assert_array_equal(schedule(carbon[rperm], att[rperm], target), base[rperm])
    # columns: the same configuration up to ties, which the index rule breaks differently
    # after a relabelling: same carbon, still feasible; in a fallback, same attainment too
    got = cperm[schedule(carbon[:, cperm], att[:, cperm], target)]
    rows = np.arange(n)
    np.testing.assert_array_equal(carbon[rows, got], carbon[rows, base])
    np.testing.assert_array_equal(att[rows, got] >= target, att[rows, base] >= target)
    fallback = ~(att >= target).any(axis=1)
    np.testing.assert_array_equal(att[rows, got][fallback], att[rows, base][fallback])
    same = np.array([len(set(c)) == m for c in carbon])  # distinct carbons: no ties at all
    np.testing.assert_array_equal(got[same], base[same])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"carbon": np.ones(3)}, "2-D"),
        ({"carbon": np.ones((2, 2)), "slo_att": np.ones((2, 3))}, "shape"),
        ({"carbon": np.array([[1.0, np.nan], [1.0, 1.0]])}, r"carbon\[0, 1\].*row 0.*column 1"),
        ({"carbon": np.array([[1.0, 1.0], [1.0, -2.0]])}, r"carbon\[1, 1\] = -2.0"),
        ({"slo_att": np.array([[1.0, 1.2], [1.0, 1.0]])}, r"slo_att\[0, 1\] = 1.2.*\[0, 1\]"),
        ({"slo_att": np.array([[1.0, 1.0], [np.inf, 1.0]])}, r"slo_att\[1, 0\]"),
        ({"slo_target": 1.5}, "slo_target"),
        ({"slo_target": float("nan")}, "slo_target"),
        ({"priority": "carbon"}, r"priority = 'carbon'.*'slo', 'default'"),
        ({"default": 2}, r"default = 2.*0\.\.1"),
        ({"default": -1}, "default"),
        ({"default": 1.0}, "int"),
        ({"carbon": np.ones((2, 0)), "slo_att": np.ones((2, 0))}, "no configurations"),
    ],
)
def test_bad_input_raises_config_error(kwargs, pattern) -> None:
    args = {"carbon": np.ones((2, 2)), "slo_att": np.ones((2, 2)), **kwargs}
    with pytest.raises(ConfigError, match=pattern):
        schedule(**args)


def test_no_workloads_gives_empty_answer() -> None:
    assert schedule(np.ones((0, 3)), np.ones((0, 3))).shape == (0,)


def test_vectorised_on_many_workloads() -> None:
    rng = np.random.default_rng(0)
    carbon, att = rng.random((200_000, 24)), rng.random((200_000, 24))
    got = schedule(carbon, att, 0.9)
    assert got.shape == (200_000,)
    assert got[:50].tolist() == reference(carbon[:50], att[:50], 0.9)


# ---------------------------------------------------------------- margin and decisions


@settings(max_examples=150, deadline=None)
@given(p=problems(), data=st.data())
def test_margin_zero_or_all_measured_equals_algorithm_1(p, data) -> None:
    carbon, att, target = p
    observed = data.draw(hnp.arrays(bool, carbon.shape))
    err = data.draw(hnp.arrays(np.float64, carbon.shape, elements=st.floats(0, 0.2)))
    plain = schedule(carbon, att, target)
    d0 = schedule_with_margin(carbon, att, observed, err, target, margin_sigmas=0.0)
    np.testing.assert_array_equal(d0.choice, plain)
    d1 = schedule_with_margin(carbon, att, np.ones_like(observed), err, target, margin_sigmas=2)
    np.testing.assert_array_equal(d1.choice, plain)
    assert not d0.changed_by_margin.any()


@settings(max_examples=150, deadline=None)
@given(p=problems(), data=st.data())
def test_margin_decision_is_consistent(p, data) -> None:
    carbon, att, target = p
    observed = data.draw(hnp.arrays(bool, carbon.shape))
    err = data.draw(hnp.arrays(np.float64, carbon.shape, elements=st.floats(0, 0.2)))
    d = schedule_with_margin(carbon, att, observed, err, target, margin_sigmas=1.0)
    rows = np.arange(carbon.shape[0])
    lower = np.where(observed, att, att - err)
    assert (d.n_feasible <= d.n_feasible_point).all()
    np.testing.assert_array_equal(d.fallback, d.n_feasible == 0)
    ok = ~d.fallback
    assert (lower[rows[ok], d.choice[ok]] >= target).all()  # confidently feasible
    best = np.where(lower >= target, carbon, np.inf).min(axis=1)
    np.testing.assert_array_equal(carbon[rows[ok], d.choice[ok]], best[ok])
    np.testing.assert_array_equal(d.chosen_att_measured, observed[rows, d.choice])
    np.testing.assert_array_equal(d.changed_by_margin, d.choice != schedule(carbon, att, target))
    has_ru = d.runner_up >= 0
    assert (d.runner_up[has_ru] != d.choice[has_ru]).all()
    assert not d.runner_up_measured[~has_ru].any()


def test_margin_excludes_a_filled_cell_that_barely_clears_the_target() -> None:
    carbon = np.array([[1.0, 2.0, 3.0]])
    att = np.array([[0.92, 0.97, 0.99]])
    observed = np.array([[False, False, True]])
    err = np.array([[0.05, 0.02, 0.0]])
    # plain Algorithm 1 takes config 0 (0.92 >= 0.9, least carbon)
    assert schedule(carbon, att, 0.9).tolist() == [0]
    # with a 1-sigma margin: config 0 -> 0.87 < 0.9 (out); config 1 -> 0.95 (in); 2 measured
    d = schedule_with_margin(carbon, att, observed, err, 0.9, margin_sigmas=1.0)
    assert d.choice.tolist() == [1]
    assert d.n_feasible.tolist() == [2] and d.n_feasible_point.tolist() == [3]
    assert d.changed_by_margin.tolist() == [True]
    assert d.chosen_att_measured.tolist() == [False]
    assert d.runner_up.tolist() == [2] and d.runner_up_measured.tolist() == [True]
    # 3 sigmas keep config 1 (0.97 - 0.06 = 0.91); 4 sigmas drop it (0.89) -> measured config 2
    assert schedule_with_margin(carbon, att, observed, err, 0.9, 3.0).choice.tolist() == [1]
    d3 = schedule_with_margin(carbon, att, observed, err, 0.9, margin_sigmas=4.0)
    assert d3.choice.tolist() == [2] and d3.chosen_att_measured.tolist() == [True]
    assert d3.summary() == {
        "workloads": 1,
        "fallback": 0,
        "changed_by_margin": 1,
        "chosen_measured": 1,
        "chosen_filled": 0,
    }
    record = d3.records()[0]
    assert record["choice"] == 2 and record["fallback"] is False


def test_margin_fallback_takes_the_best_chance_of_meeting_the_target() -> None:
    carbon = np.array([[1.0, 5.0, 2.0, 3.0]])
    att = np.array([[0.88, 0.89, 0.86, 0.80]])
    observed = np.array([[False, True, False, False]])
    err = np.array([[0.05, 0.0, 0.01, 0.2]])
    # nothing clears 0.9 with a 1-sigma margin. Chances: config 0 (0.88 - 0.9) / 0.05 = -0.4;
    # config 1 is measured at 0.89: no chance; config 2: -4; config 3: -0.5 -> config 0,
    # although plain Algorithm 1's fallback (max attainment) would take the measured 0.89
    d = schedule_with_margin(carbon, att, observed, err, 0.9, margin_sigmas=1.0)
    assert d.choice.tolist() == [0] and d.fallback.tolist() == [True]
    assert d.runner_up.tolist() == [3]
    assert schedule(carbon, att, 0.9).tolist() == [1]
    assert schedule_with_margin(carbon, att, observed, err, 0.9, 0.0).choice.tolist() == [1]
    dd = schedule_with_margin(carbon, att, observed, err, 0.9, 1.0, "default", 0)
    assert dd.choice.tolist() == [0] and dd.runner_up.tolist() == [-1]


def test_decide_on_completion_results() -> None:
    shape = (2, 3)
    observed = np.array([[True, False, True], [False, True, True]])
    zeros = np.zeros(shape)

    def result(values, stderr) -> CompletionResult:
        return CompletionResult(values, observed, stderr, zeros, "sgd", 2, "identity")

    carbon = result(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), zeros)
    att = result(np.array([[0.5, 0.95, 0.99], [0.95, 0.5, 0.91]]), np.full(shape, 0.03))
    d = decide(carbon, att, slo_target=0.9, margin_sigmas=1.0)
    assert isinstance(d, Decision)
    # row 0: config 1 is filled, 0.95 - 0.03 = 0.92 >= 0.9 -> feasible, carbon 2 < 3 -> 1
    # row 1: config 2 measured 0.91, feasible, carbon 1 -> 2
    assert d.choice.tolist() == [1, 2]
    assert d.chosen_carbon_measured.tolist() == [False, True]


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"observed_mask": np.ones((1, 2), bool)}, "observed_mask"),
        ({"att_stderr": -np.ones((2, 2))}, "att_stderr"),
        ({"att_stderr": np.ones((2, 3))}, "att_stderr"),
        ({"margin_sigmas": -1.0}, "margin_sigmas"),
    ],
)
def test_margin_bad_input(kwargs, pattern) -> None:
    args = {
        "carbon": np.ones((2, 2)),
        "slo_att": np.ones((2, 2)),
        "observed_mask": np.ones((2, 2), bool),
        "att_stderr": np.zeros((2, 2)),
        **kwargs,
    }
    with pytest.raises(ConfigError, match=pattern):
        schedule_with_margin(**args)
