"""The replayed day: each hour's intensity is the region's trace at that hour, its sample holds
the hour's arrivals in a window of ``sample_s`` (sizes clipped as asked), and its scale is
the hour's tokens per sampled token."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from greenllm.carbon import CarbonIntensityTrace
from greenllm.errors import ConfigError
from greenllm.serve.replay import plan_day, sample_offset_s

JULY_1 = datetime(2022, 7, 1, tzinfo=UTC).timestamp()


def test_hours_take_the_traces_intensity_and_a_sample_of_their_load() -> None:
    day = plan_day("conversation", "CISO", hours=6, start="2022-07-01", qps=2.0,
                   load=(1.0, 0.5), sample_s=30.0, max_request_tokens=2048,
                   max_output_tokens=512)  # fmt: skip
    trace = CarbonIntensityTrace.from_region("CISO", periodic=False)
    assert [h.index for h in day.hours] == list(range(6))
    for h in day.hours:
        assert h.start_s == JULY_1 + 3600.0 * h.index
        assert h.intensity_g_per_kwh == pytest.approx(float(trace.mean(h.start_s,
                                                                       h.start_s + 3600)))
        assert h.qps == (2.0 if h.index % 2 == 0 else 1.0)
        r = h.requests
        assert len(r) > 0 and r.arrival_s.min() >= 0 and r.arrival_s.max() < 30.0
        assert (r.output_tokens <= 512).all() and (r.input_tokens + r.output_tokens <= 2048).all()
        assert h.hour_requests == pytest.approx(3600 * h.qps, rel=0.02)
        assert h.scale == pytest.approx(h.hour_output_tokens / r.output_tokens.sum())
    assert day.hours[0].intensity_g_per_kwh == pytest.approx(181.2, abs=0.1)
    assert day.peak_qps == 2.0 and day.region == "CISO" and day.hours[2].label.endswith("02:00Z")
    # the same rate gives the same hour of requests; different samples of it
    a, b = day.hours[0].requests, day.hours[2].requests
    assert not (len(a) == len(b) and np.array_equal(a.input_tokens, b.input_tokens))


def test_samples_spread_over_the_hour() -> None:
    starts = [sample_offset_s(h, 60.0) for h in range(24)]
    assert 0 < starts[0] < 100 and max(starts) <= 3600 - 60 and len(set(starts)) == 24
    assert sample_offset_s(24, 60.0) == starts[0]


@pytest.mark.parametrize("kwargs, match", [
    ({"start": "2021-06-01"}, "covers 2022-01-01"),
    ({"start": "2022-07-01T00:30Z"}, "start of an hour"),
    ({"start": "yesterday"}, "not a date"),
    ({"hours": 0}, "hours"),
    ({"load": ()}, "load"),
    ({"load": (1.0, -1.0)}, "load"),
    ({"sample_s": 0.5}, "sample_s"),
    ({"max_output_tokens": 4096}, "max_output_tokens"),
])  # fmt: skip
def test_bad_days_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        plan_day("conversation", "CISO", **kwargs)


def test_unknown_region_and_trace_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no hourly trace"):
        plan_day("conversation", "XYZ")
    with pytest.raises(ConfigError, match="unknown trace"):
        plan_day("chatter", "CISO")


def test_a_rate_above_the_traces_lays_shifted_copies_over_it() -> None:
    day = plan_day("code", "CISO", hours=24, qps=6.0, sample_s=60.0)  # the trace: ~2.5 QPS
    assert day.hours[0].hour_requests == pytest.approx(6.0 * 3600, rel=0.03)
    samples = [len(h.requests) for h in day.hours]  # a bursty trace: 0 to 962 per minute
    assert np.mean(samples) == pytest.approx(6.0 * 60, rel=0.1)
