"""The shared argument types: finite, in range, bounded in size, never empty."""

from __future__ import annotations

import argparse
import math

import pytest

from greenllm.cli.args import (
    MAX_RANGE_POINTS,
    check_float,
    float_in,
    float_range,
    gpu_lifetimes,
    int_in,
    text,
    writable_dir,
)
from greenllm.errors import ConfigError

NUMBERS = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "", "  ", "abc",
           "1e-320", "1e308", "-1", "9" * 400]  # fmt: skip


@pytest.mark.parametrize("value", NUMBERS)
def test_float_in_refuses_non_finite_empty_and_out_of_range(value) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        float_in(0.1, 100.0)(value)


@pytest.mark.parametrize(("value", "expected"), [("0.1", 0.1), ("100", 100.0), (" 7 ", 7.0)])
def test_float_in_accepts_the_closed_range(value, expected) -> None:
    assert float_in(0.1, 100.0)(value) == expected


def test_float_in_open_lower_end() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        float_in(0.0, 1.0, lo_open=True)("0")
    assert float_in(0.0, 1.0, lo_open=True)("1e-9") == 1e-9


@pytest.mark.parametrize("value", ["", "-1", "0", "1.5", "1e3", "abc", "9" * 25, str(2**64)])
def test_int_in_refuses(value) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        int_in(1, 1000)(value)


@pytest.mark.parametrize("value", ["", "   ", "a" * 5000, "a\x00b"])
def test_text_refuses_empty_huge_and_nul(value) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        text(value)


@pytest.mark.parametrize(
    "spec",
    ["", ",", ",,,", "1,,2", "1,", "5:1:1", "1:2", "1:2:3:4", "1:2:0", "1:2:-1", "1::1",
     "nan:1:1", "1:nan:1", "1:2:nan", "inf:inf:1", "1:inf:1", "0:1e308:1e-308", "0:100:1e-9",
     "1:1e12:1", "a,b", "1,nan", "1,inf", "1,-inf", "-5", "1e999", ",".join(["1"] * 10_001)],
)  # fmt: skip
def test_float_range_refuses(spec) -> None:
    with pytest.raises(ConfigError, match="--x"):
        float_range("--x", spec, 0.0, 1e4)


@pytest.mark.parametrize(
    ("spec", "values"),
    [("1:3:1", [1, 2, 3]), ("0.5:2:0.5", [0.5, 1, 1.5, 2]), ("1,2,4", [1, 2, 4]), ("7", [7]),
     ("0:1:0.1", [round(0.1 * i, 10) for i in range(11)]), ("1:1:1", [1])],
)  # fmt: skip
def test_float_range_accepts(spec, values) -> None:
    assert float_range("--x", spec, 0.0, 1e4) == values


def test_float_range_limit_is_exact() -> None:
    assert len(float_range("--x", f"1:{MAX_RANGE_POINTS}:1")) == MAX_RANGE_POINTS
    with pytest.raises(ConfigError, match="more than"):
        float_range("--x", f"0:{MAX_RANGE_POINTS}:1")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 101.0])
def test_check_float(value) -> None:
    with pytest.raises(ConfigError, match="--y"):
        check_float("--y", value, 0.0, 100.0)


@pytest.mark.parametrize("item", ["T4", "T4=", "=3", "T4=0", "T4=nan", "T4=inf", "T4=1e-320",
                                  "T4=101", "T4=abc", "T4=" + "9" * 100])  # fmt: skip
def test_gpu_lifetimes_refuses(item) -> None:
    with pytest.raises(ConfigError, match="--lifetime"):
        gpu_lifetimes([item], 7.0)


def test_gpu_lifetimes_default_is_checked() -> None:
    assert gpu_lifetimes(["t4=10"], 7.0) == {"T4": 10.0}
    with pytest.raises(ConfigError, match="--lifetime-years"):
        gpu_lifetimes(None, 1e-320)


def test_writable_dir_creates_nothing(tmp_path) -> None:
    (tmp_path / "f").write_text("")
    assert writable_dir("--out", tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    for bad in (tmp_path / "f", tmp_path / "f" / "x", "/dev/null"):
        with pytest.raises(ConfigError, match="--out"):
            writable_dir("--out", bad)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
