"""The one boundary check of input numbers: right type, finite, in range, else ConfigError."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.checks import finite_array, finite_int, finite_number, plain_numbers
from greenllm.errors import ConfigError, GreenLLMError

WRONG_TYPES = ["5", "", b"1", True, False, np.bool_(True), None, [1.0], (1.0,), {"a": 1},
               object(), 1 + 0j, np.array(1.0)]  # fmt: skip
NOT_FINITE = [math.nan, math.inf, -math.inf, np.float64("nan"), 10**400, -(10**400)]


@pytest.mark.parametrize("bad", WRONG_TYPES + NOT_FINITE, ids=repr)
def test_finite_number_refuses_wrong_types_and_non_finite(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        finite_number("x", bad, -1e300, 1e300, where="f")
    assert isinstance(info.value, (GreenLLMError, ValueError))
    assert str(info.value).startswith("f: x = ")
    assert "[-1e+300, 1e+300]" in str(info.value)


@pytest.mark.parametrize(
    ("value", "lo_open", "hi_open"),
    [(-0.001, False, False), (10.001, False, False), (-1e300, False, False), (1e300, False, False),
     (0.0, True, False), (10.0, False, True), (0, True, True), (10, True, True),
     (-5e-324, False, False), (np.float32(11.0), False, False), (np.int64(-1), False, False)],
)  # fmt: skip
def test_finite_number_refuses_each_side_of_the_range(
    value: float, lo_open: bool, hi_open: bool
) -> None:
    with pytest.raises(ConfigError, match=r"^qps = .*: must be a finite number in [\[(]0, 10[\])]"):
        finite_number("qps", value, 0.0, 10.0, lo_open=lo_open, hi_open=hi_open)


@pytest.mark.parametrize(
    ("value", "lo_open", "hi_open"),
    [(0.0, False, False), (10.0, False, False), (0, False, True), (10, True, False),
     (5e-324, True, False), (np.float32(2.5), True, True), (np.int64(3), False, False),
     (Fraction(1, 3), True, True)],
)  # fmt: skip
def test_finite_number_accepts_the_range_and_its_closed_ends(
    value: float, lo_open: bool, hi_open: bool
) -> None:
    out = finite_number("x", value, 0.0, 10.0, lo_open=lo_open, hi_open=hi_open)
    assert type(out) is float and out == float(value)


def test_messages_name_the_argument_the_value_and_the_range() -> None:
    with pytest.raises(ConfigError) as info:
        finite_number("pue", 0.5, 1.0, 10.0, where="window_carbon")
    assert str(info.value) == (
        "window_carbon: pue = 0.5: must be a finite number in [1, 10] (1 <= pue <= 10)"
    )
    with pytest.raises(ConfigError) as info:
        finite_number("lifetimes_years", math.nan, 0.0, 100.0, lo_open=True)
    assert str(info.value) == (
        "lifetimes_years = nan: must be a finite number in (0, 100] (0 < lifetimes_years <= 100)"
    )
    with pytest.raises(ConfigError) as info:  # not an identifier: no inequality
        finite_number("--intensity", 2e4, 0.0, 1e4, hi_open=True)
    assert str(info.value) == "--intensity = 20000.0: must be a finite number in [0, 10000)"
    with pytest.raises(ConfigError) as info:  # numpy scalars and huge values shown plainly
        finite_number("x", np.float64(-1.0), 0.0, 1.0)
    assert "x = -1.0:" in str(info.value) and "np." not in str(info.value)
    with pytest.raises(ConfigError) as info:
        finite_number("x", 10**400, 0.0, 1.0)
    assert len(str(info.value)) < 150


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6),
       st.floats(0, 1e6), st.booleans(), st.booleans())  # fmt: skip
def test_any_float_is_returned_unchanged_in_range_or_refused(
    x: float, lo: float, width: float, lo_open: bool, hi_open: bool
) -> None:
    hi = lo + width
    try:
        out = finite_number("x", x, lo, hi, lo_open=lo_open, hi_open=hi_open)
    except ConfigError:
        inside = (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
        assert not (math.isfinite(x) and inside)
        return
    assert out == x and math.isfinite(out)
    assert (out > lo if lo_open else out >= lo) and (out < hi if hi_open else out <= hi)


# finite_int -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [*WRONG_TYPES, 1.0, 3.5, math.nan, -1, 101, np.int64(101), 10**400],
                         ids=repr)  # fmt: skip
def test_finite_int_refuses(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^w: n = .*: must be an integer in \[0, 100\]$"):
        finite_int("n", bad, 0, 100, where="w")


@pytest.mark.parametrize("good", [0, 100, np.int32(7), np.uint8(3)])
def test_finite_int_accepts(good: int) -> None:
    out = finite_int("n", good, 0, 100)
    assert type(out) is int and out == int(good)


# finite_array ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    ["5", b"1", True, np.bool_(False), None, {"a": 1}, object(), [1.0, "2"], [1.0, None],
     [1.0, True], [[1.0], [1.0, 2.0]], np.array(["a"]), np.array([True]), [1.0, math.nan],
     [1.0, math.inf], np.array([0.5, -math.inf]), [-1.0], [0.0, 11.0], 10**400, 1 + 0j],
    ids=repr,
)  # fmt: skip
def test_finite_array_refuses(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"^f: x = .*: must be a finite number in \[0, 10\]"):
        finite_array("x", bad, 0.0, 10.0, where="f")


def test_finite_array_names_the_first_bad_element() -> None:
    with pytest.raises(ConfigError, match=r"^x = 11\.0: "):
        finite_array("x", [[1, 2], [11, -3]], 0.0, 10.0)
    with pytest.raises(ConfigError, match=r"^x = -5\.0: "):
        finite_array("x", -5, 0.0, 10.0)
    with pytest.raises(ConfigError, match=r"^x = 0\.0: .*\(0, 10\]"):
        finite_array("x", [1.0, 0.0], 0.0, 10.0, lo_open=True)


@pytest.mark.parametrize(
    "good",
    [3, 2.5, np.float32(1.0), [1, 2.5], (0, 10), [[1.0, 2.0], [3.0, 4.0]], np.arange(5),
     np.array(7.0), [], range(3), [np.float64(1.0), np.int64(2)]],
    ids=repr,
)  # fmt: skip
def test_finite_array_accepts_numbers_of_any_shape(good: object) -> None:
    out = finite_array("x", good, 0.0, 10.0)
    assert out.dtype == np.float64 and out.shape == np.shape(good)
    assert np.array_equal(out, np.asarray(good, dtype=float))


def test_finite_array_copies() -> None:
    given_array = np.array([1.0, 2.0])
    out = finite_array("x", given_array, 0.0, 10.0)
    out[0] = 5.0
    assert given_array[0] == 1.0


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8))
def test_any_float_list_is_returned_unchanged_in_range_or_refused(xs: list[float]) -> None:
    try:
        out = finite_array("x", xs, -1e3, 1e3)
    except ConfigError:
        assert not all(math.isfinite(x) and -1e3 <= x <= 1e3 for x in xs)
        return
    assert out.tolist() == xs


def test_plain_numbers() -> None:
    assert plain_numbers([1, 2.5, (3, np.float64(4.0))]) and plain_numbers(np.array([True]))
    assert not plain_numbers([1.0, True]) and not plain_numbers([1.0, "2"])
    assert not plain_numbers([[1.0], [None]]) and not plain_numbers("1")
