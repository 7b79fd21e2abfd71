"""Numeric fields of every greenllm model take numbers only: a str, bytes or bool is a
ConfigError naming the field (pydantic's lax mode would turn "5" into 5.0)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.config import (
    SLO,
    ConfigKind,
    Configuration,
    FrozenModel,
    ModelSpec,
    RequestSize,
    RequestSizeDistribution,
    Workload,
)
from greenllm.errors import ConfigError
from greenllm.profiler.store import CarbonAtMeasurement, GPUUsage, LatencySummary, ProfileRecord
from greenllm.scheduler import Planner
from tests.profiler.store.store_writer import make_record
from tests.scheduler import synthetic

SIZE = RequestSize(input_tokens=10, output_tokens=5)
PLAN = Planner(intensity_g_per_kwh=261.0).plan(synthetic.matrices())
EXAMPLES: list[FrozenModel] = [
    SLO(ttft_s=0.2, tpot_s=0.08),
    SIZE,
    RequestSizeDistribution(p25=SIZE, p50=SIZE, p75=SIZE),
    Workload(application="chat", request_size=SIZE, qps=2.0, slo=SLO(ttft_s=1, tpot_s=0.1)),
    ModelSpec(
        name="m", n_layers=2, hidden_size=64, n_heads=4, n_kv_heads=2, intermediate_size=128,
        vocab_size=100,
    ),
    Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"),
    LatencySummary(count=2, mean_s=0.5, p50_s=0.5, p90_s=0.6, p99_s=0.7),
    GPUUsage(gpu="A100", energy_j=1.0, busy_s=1.0, allocated_s=1.0),
    CarbonAtMeasurement(
        embodied_g=1.0, operational_g=2.0, intensity_g_per_kwh=261.0, lifetime_years=7.0
    ),
    make_record(2),
    PLAN.entries[0],
    PLAN,
]
CASES = [(type(m), m, f) for m in EXAMPLES for f in sorted(type(m).number_fields())]
BAD = ["5", "1.5", " 2 ", b"5", bytearray(b"5"), True, False]


def test_every_model_has_its_numeric_fields_found() -> None:
    assert Workload.number_fields() == {"qps"}
    assert Configuration.number_fields() == {"link_gbps", "num_speculative_tokens"}
    assert {"duration_s", "n_requests", "slo_attainment"} <= ProfileRecord.number_fields()
    assert "energy_source" not in ProfileRecord.number_fields()
    assert len(CASES) > 40


@pytest.mark.parametrize("bad", BAD, ids=repr)
@pytest.mark.parametrize(("cls", "example", "field"), CASES,
                         ids=[f"{c.__name__}.{f}" for c, _, f in CASES])  # fmt: skip
def test_a_non_number_for_a_numeric_field_is_a_config_error(
    cls: type[FrozenModel], example: FrozenModel, field: str, bad: Any
) -> None:
    data = {**example.model_dump(), field: bad}
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field} = .*must be a number"):
        cls.model_validate(data)
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field} = "):
        cls(**data)


def test_nested_fields_are_named_and_numbers_still_work() -> None:
    with pytest.raises(ConfigError, match=r"Workload\.request_size\.input_tokens = '10'"):
        Workload(application="a", request_size={"input_tokens": "10", "output_tokens": 5}, qps=1)
    with pytest.raises(ConfigError, match=r"Workload\.qps = '5'"):
        Workload(application="a", request_size=SIZE, qps="5")  # type: ignore[arg-type]
    import numpy as np

    w = Workload(application="a", request_size={"input_tokens": np.int64(10), "output_tokens": 5},
                 qps=np.float32(2.5))  # fmt: skip
    assert (w.request_size, w.qps) == (SIZE, 2.5)
    assert Configuration(kind="dsd", old_gpu="T4", draft_model="d", link_gbps=16).link_gbps == 16.0


def test_enum_values_and_json_still_validate() -> None:
    cfg = Configuration(kind="spec-decode", draft_model="llama-1b")  # an alias string
    assert cfg.kind is ConfigKind.SPEC_DECODE
    assert Configuration.model_validate_json(cfg.model_dump_json()) == cfg
    rec = make_record(4)
    assert ProfileRecord.model_validate_json(rec.model_dump_json()) == rec  # ISO datetimes
    assert ProfileRecord.model_validate(rec.model_dump(mode="json")) == rec
    with pytest.raises(ConfigError, match=r"Workload\.qps = '2'"):
        Workload.model_validate_json('{"application": "a", "qps": "2", '
                                     '"request_size": {"input_tokens": 1, "output_tokens": 1}}')


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(CASES),
    bad=st.one_of(st.text(max_size=8), st.binary(max_size=8), st.booleans(),
                  st.floats(allow_nan=False).map(str), st.integers().map(str)),
)  # fmt: skip
def test_any_text_bytes_or_bool_is_refused(case: tuple[Any, Any, str], bad: Any) -> None:
    cls, example, field = case
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field} = "):
        cls.model_validate({**example.model_dump(), field: bad})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=repr)
@pytest.mark.parametrize(("cls", "example", "field"), CASES,
                         ids=[f"{c.__name__}.{f}" for c, _, f in CASES])  # fmt: skip
def test_nan_and_infinity_are_refused_everywhere(
    cls: type[FrozenModel], example: FrozenModel, field: str, bad: float
) -> None:
    """No model holds a NaN or an infinity (a hand-edited plan or record file included)."""
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field} = "):
        cls.model_validate({**example.model_dump(), field: bad})


def test_a_plan_file_with_nan_is_refused() -> None:
    text = PLAN.to_json().replace('"slo_target": 0.9', '"slo_target": NaN')
    assert "NaN" in text
    with pytest.raises(ConfigError, match=r"Plan\.slo_target"):
        type(PLAN).from_json(text)
