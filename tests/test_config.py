"""Validation of the shared data models."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.config import (
    ID_FIELDS,
    ID_VERSION,
    SLO,
    ConfigKind,
    Configuration,
    ModelSpec,
    RequestSize,
    RequestSizeDistribution,
    Workload,
)
from greenllm.errors import ConfigError, GreenLLMError

SHAREGPT = RequestSizeDistribution(
    p25=RequestSize(input_tokens=24, output_tokens=24),
    p50=RequestSize(input_tokens=160, output_tokens=140),
    p75=RequestSize(input_tokens=510, output_tokens=357),
)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (
            lambda: SLO(ttft_s=-1, tpot_s=0.08),
            "SLO.ttft_s = -1: Input should be greater than 0 (allowed: 0 < ttft_s <= 3600)",
        ),
        (lambda: SLO(ttft_s=0.2, tpot_s=float("nan")), "SLO.tpot_s"),
        (lambda: RequestSize(input_tokens=0, output_tokens=5), "RequestSize.input_tokens = 0"),
        (
            lambda: Workload(
                application="chat", request_size=RequestSize(input_tokens=1, output_tokens=1), qps=0
            ),
            "allowed: 1e-06 <= qps <= 100000",
        ),
        (
            lambda: Workload(
                application="chat", request_size={"input_tokens": 0, "output_tokens": 1}, qps=1
            ),
            "Workload.request_size.input_tokens = 0: Input should be greater than or equal to 1 "
            "(allowed: 1 <= input_tokens <= 1048576)",
        ),
        (lambda: Configuration(kind="dsd", old_gpu="T4"), "DSD needs draft_model"),
        (lambda: Configuration(kind="dpd"), "DPD needs old_gpu"),
        (lambda: Configuration(kind="standalone", old_gpu="T4"), "Standalone takes no old_gpu"),
        (
            lambda: Configuration(kind="spec_decode", draft_model="llama-1b", link_gbps=10),
            "SpecDecode takes no link_gbps",
        ),
        (
            lambda: Configuration(kind="quantum"),
            "Input should be 'standalone', 'spec_decode', 'dpd' or 'dsd'",
        ),
        (
            lambda: Configuration(kind="dpd", old_gpu="T4", link_gbps=0),
            "allowed: 0 < link_gbps <= 3200",
        ),
        (
            lambda: ModelSpec(
                name="m",
                n_layers=2,
                hidden_size=100,
                n_heads=3,
                n_kv_heads=1,
                intermediate_size=8,
                vocab_size=10,
            ),
            "divisible by n_heads",
        ),
        (
            lambda: RequestSizeDistribution(
                p25=RequestSize(input_tokens=5, output_tokens=1),
                p50=RequestSize(input_tokens=4, output_tokens=1),
                p75=RequestSize(input_tokens=6, output_tokens=1),
            ),
            "must not decrease: got 5, 4, 6",
        ),
    ],
)
def test_invalid_values_raise_config_error_naming_field_and_range(build, fragment) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert fragment in str(info.value)
    assert isinstance(info.value, GreenLLMError) and isinstance(info.value, ValueError)


def test_models_are_frozen_and_reject_extra_fields() -> None:
    slo = SLO(ttft_s=0.2, tpot_s=0.08)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own frozen error
        slo.ttft_s = 1.0  # type: ignore[misc]
    with pytest.raises(ConfigError, match="Extra inputs are not permitted"):
        SLO(ttft_s=0.2, tpot_s=0.08, ttft_ms=3)


@pytest.mark.parametrize(
    ("alias", "kind"),
    [
        ("Standalone", ConfigKind.STANDALONE),
        ("SpecDecode", ConfigKind.SPEC_DECODE),
        ("Disg-Pref-Decode", ConfigKind.DPD),
        ("DSD", ConfigKind.DSD),
        ("disg_spec_decode", ConfigKind.DSD),
    ],
)
def test_configuration_kind_aliases(alias: str, kind: ConfigKind) -> None:
    assert ConfigKind(alias) is kind


def test_configuration_defaults_labels_and_stable_ids() -> None:
    dsd = Configuration(kind="Disg-Spec-Decode", old_gpu="T4", draft_model="llama-1b")
    assert dsd.link_gbps == 16.0  # the paper's GCP default link
    assert dsd.label == "DSD A100+T4 llama-1b @16Gbps"
    assert dsd.gpus == ("A100", "T4")
    same = Configuration(
        kind="dsd", new_gpu="A100", old_gpu="T4", draft_model="llama-1b", link_gbps=16
    )
    assert same.id == dsd.id
    other = Configuration(kind="dsd", old_gpu="V100", draft_model="llama-1b")
    assert other.id != dsd.id
    assert Configuration.model_validate_json(dsd.model_dump_json()) == dsd


# Pinned: these ids key every stored cell. A change here re-keys users' stores, so it needs a
# new ID_VERSION and a store migration (greenllm/profiler/store/schema.py), not a test edit.
PINNED_IDS = [
    ({"kind": "standalone"}, "standalone-9cd6538344b2"),
    ({"kind": "standalone", "new_gpu": "H100", "target_model": "llama-3.1-8b"},
     "standalone-314b14e371c7"),
    ({"kind": "spec_decode", "draft_model": "llama-1b"}, "spec_decode-82b072a4a104"),
    ({"kind": "spec_decode", "draft_model": "llama-300m", "num_speculative_tokens": 8},
     "spec_decode-c16e0352c27c"),
    ({"kind": "dpd", "old_gpu": "T4"}, "dpd-d2e6d3b63ecd"),
    ({"kind": "dpd", "old_gpu": "V100", "link_gbps": 12.5}, "dpd-b00018f49ff9"),
    ({"kind": "dsd", "old_gpu": "T4", "draft_model": "llama-1b"}, "dsd-72f6aaa3cb89"),
    ({"kind": "dsd", "new_gpu": "H100", "old_gpu": "T4", "draft_model": "llama-300m",
      "link_gbps": 100}, "dsd-36e1d2301666"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected"), PINNED_IDS)
def test_configuration_ids_are_pinned(fields: dict, expected: str) -> None:
    assert ID_VERSION == 1
    assert Configuration(**fields).id == expected


def test_configuration_id_is_the_documented_hash_of_the_id_fields() -> None:
    import hashlib
    import json

    cfg = Configuration(kind="dpd", old_gpu="V100", link_gbps=12.5)
    payload = {"id_version": 1, "kind": "dpd", "new_gpu": "A100", "old_gpu": "V100",
               "target_model": "llama-2-7b", "draft_model": None, "link_gbps": 12.5,
               "num_speculative_tokens": 4}  # fmt: skip
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert cfg.id == "dpd-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    assert set(ID_FIELDS) <= set(Configuration.model_fields)  # no stale name in the list


def test_configuration_id_normalises_numbers() -> None:
    base = Configuration(kind="dpd", old_gpu="T4", link_gbps=16.0)
    assert Configuration(kind="dpd", old_gpu="T4").id == base.id  # the default link
    assert Configuration(kind="dpd", old_gpu="T4", link_gbps=16).id == base.id
    assert Configuration(kind="dpd", old_gpu="T4", link_gbps=16 + 1e-12).id == base.id
    assert Configuration(kind="dpd", old_gpu="T4", link_gbps=0.1 + 0.2).id == (
        Configuration(kind="dpd", old_gpu="T4", link_gbps=0.3).id
    )
    assert Configuration(kind="dpd", old_gpu="T4", link_gbps=16.5).id != base.id
    assert Configuration(kind="Disg-Pref-Decode", old_gpu="T4").id == base.id


class _WithPriority(Configuration):
    """A configuration model grown by a defaulted field (what a future release may add)."""

    priority: int = 0


@pytest.mark.parametrize(("fields", "expected"), PINNED_IDS)
def test_a_new_defaulted_field_changes_no_id(fields: dict, expected: str) -> None:
    grown = _WithPriority(**fields)
    assert grown.id == expected == Configuration(**fields).id
    assert _WithPriority(**fields, priority=3).id == expected  # not an identifying field
    assert "priority" in grown.model_dump_json()  # the JSON grew; the id did not


def test_every_identifying_field_changes_the_id() -> None:
    base = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b")
    changes = {"new_gpu": "H100", "old_gpu": "V100", "target_model": "llama-3.1-8b",
               "draft_model": "llama-300m", "link_gbps": 100.0, "num_speculative_tokens": 5}
    assert set(changes) == set(ID_FIELDS) - {"kind"}  # fmt: skip
    ids = {Configuration(**{**base.model_dump(), field: value}).id
           for field, value in changes.items()}  # fmt: skip
    assert len(ids | {base.id}) == len(changes) + 1


def test_workload_normalises_application_and_round_trips() -> None:
    w = Workload(
        application=" ShareGPT ", request_size=SHAREGPT, qps=2.5, slo=SLO(ttft_s=0.2, tpot_s=0.08)
    )
    assert w.application == "sharegpt"
    assert Workload.model_validate_json(w.model_dump_json()) == w
    with pytest.raises(ConfigError, match=r"Workload\.application"):
        Workload(application="bad name!", request_size=SHAREGPT, qps=1)


def test_model_spec_counts_llama_2_7b_parameters() -> None:
    llama7b = ModelSpec(
        name="llama-2-7b",
        n_layers=32,
        hidden_size=4096,
        n_heads=32,
        n_kv_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
    )
    # Llama-2-7B has 6,738,415,616 parameters (Touvron et al. 2023; the HF checkpoint's count).
    assert llama7b.n_params == 6_738_415_616
    assert llama7b.head_dim == 128
    # KV cache: 2 x 32 layers x 32 heads x 128 x 2 bytes = 512 KiB per token.
    assert llama7b.kv_cache_bytes(1) == 524_288
    assert llama7b.kv_cache_bytes(160) == 160 * 524_288


def test_distribution_quantiles_pass_through_the_percentiles() -> None:
    q = SHAREGPT.quantile([0.25, 0.5, 0.75], "input_tokens")
    assert q.tolist() == [24, 160, 510]
    assert SHAREGPT.quantile([0.25, 0.5, 0.75], "output_tokens").tolist() == [24, 140, 357]


def test_distribution_samples_match_percentiles() -> None:
    sizes = SHAREGPT.sample(20_000, seed=1)
    ins = np.array([s.input_tokens for s in sizes])
    p25, p50, p75 = np.percentile(ins, [25, 50, 75])
    assert abs(p50 - 160) / 160 < 0.05
    assert abs(p25 - 24) / 24 < 0.1 and abs(p75 - 510) / 510 < 0.05
    assert SHAREGPT.sample(5, seed=3) == SHAREGPT.sample(5, seed=3)


@given(st.floats(0.001, 0.999), st.floats(0.001, 0.999))
def test_distribution_quantile_is_monotone(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert SHAREGPT.quantile(lo) <= SHAREGPT.quantile(hi)
    assert 1 <= SHAREGPT.quantile(lo) <= SHAREGPT.max_tokens


# Trust: every bad input is a ConfigError, every in-range input gives finite output ----------
@pytest.mark.parametrize("bad", ["", " ", "bogus", None, 5, 1.5, b"dsd", "x" * 10_000])
def test_config_kind_of_a_bad_value_is_a_config_error_listing_the_kinds(bad: object) -> None:
    with pytest.raises(ConfigError, match="'standalone', 'spec_decode', 'dpd', 'dsd'"):
        ConfigKind(bad)


def _distribution() -> RequestSizeDistribution:
    return RequestSizeDistribution(
        p25=RequestSize(input_tokens=10, output_tokens=5),
        p50=RequestSize(input_tokens=100, output_tokens=50),
        p75=RequestSize(input_tokens=1000, output_tokens=500),
    )


@pytest.mark.parametrize(
    "bad",
    [float("nan"), float("inf"), -float("inf"), -0.5, 1.0000001, 1e308, -1e-320, 10**400, "0.5",
     None, "", True, [0.5, float("nan")], [[0.5], [0.5, 0.1]], {"q": 0.5}],
    ids=repr,
)  # fmt: skip
def test_quantile_refuses_bad_q(bad: object) -> None:
    with pytest.raises(ConfigError, match="q = "):
        _distribution().quantile(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "tokens", None, 5])
def test_quantile_refuses_bad_attr(bad: object) -> None:
    with pytest.raises(ConfigError, match="attr"):
        _distribution().quantile(0.5, bad)  # type: ignore[arg-type]


@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
    st.sampled_from(["input_tokens", "output_tokens"]),
)
def test_quantile_of_any_q_in_range_is_a_valid_token_count(qs: list[float], attr: str) -> None:
    dist = _distribution()
    out = dist.quantile(np.array(qs), attr)
    assert np.all(out >= 1) and np.all(out <= dist.max_tokens)
    assert 1 <= int(dist.quantile(qs[0], attr)) <= dist.max_tokens


@pytest.mark.parametrize(
    "text",
    [b'{"application":"x","request_size":{"input_tokens":1,"output_tokens":1},"qps":NaN}',
     b'{"application":"x","request_size":{"input_tokens":1,"output_tokens":1},"qps":1e999}',
     b'{"application":"x","request_size":{"input_tokens":1,"output_tokens":1},"qps":1e-320}',
     b'{"application":"x","request_size":{"input_tokens":1,"output_tokens":' + b"9" * 5000
     + b'},"qps":1}',
     b'{"application":"\xff","request_size":{"input_tokens":1,"output_tokens":1},"qps":1}',
     b'{"application":"x","request_size":' + b"[" * 5000 + b"]" * 5000 + b',"qps":1}',
     b"", b"[]", b"null", b'{"application":""}'],
)  # fmt: skip
def test_bad_workload_json_is_a_config_error(text: bytes) -> None:
    with pytest.raises(ConfigError):
        Workload.model_validate_json(text)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_fuzzed_configuration_json_is_a_config_error_or_valid(data: bytes) -> None:
    for model in (Workload, Configuration, SLO):
        with contextlib.suppress(ConfigError):  # anything else fails the test
            model.model_validate_json(b'{"kind":"dsd",' + data)
