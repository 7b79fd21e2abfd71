"""Output: no NaN or infinity is ever printed; JSON is strict."""

from __future__ import annotations

import math

import pytest

from greenllm.cli.output import OutputError, dumps, emit_json, fmt, table
from tests.cli.helpers import strict_json


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_fmt_refuses_non_finite(value) -> None:
    with pytest.raises(OutputError):
        fmt(value)
    with pytest.raises(OutputError):
        table(["x"], [[value]])


@pytest.mark.parametrize(
    "payload",
    [{"a": math.nan}, [1.0, math.inf], {"x": {"y": [-math.inf]}}],
)
def test_json_refuses_non_finite_and_prints_nothing(capsys, payload) -> None:
    with pytest.raises(OutputError):
        emit_json(payload)
    assert capsys.readouterr().out == ""


def test_json_is_strict_and_serialises_numpy(capsys) -> None:
    import numpy as np

    emit_json({"a": np.arange(3), "b": np.float64(1.5)})
    assert strict_json(capsys.readouterr().out) == {"a": [0, 1, 2], "b": 1.5}
    assert dumps(1e308) == "1e+308"
