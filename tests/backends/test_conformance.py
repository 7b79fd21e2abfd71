"""One conformance test for every registered backend that can run here (Surprise-style).

Each backend runs five ShareGPT-P25 requests at 1 QPS in every configuration kind it supports
(llama-1b target, llama-300m draft, A100 + T4) and the result must satisfy the invariants every
consumer of :class:`~greenllm.backends.base.RunResult` relies on. Kinds it does not support must
be refused with :class:`ConfigError`; a closed backend refuses every run with
:class:`BackendClosedError`. Backends whose optional dependency is absent, or that need a GPU on
a machine without one, are skipped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pytest

from greenllm.backends import (
    BUILTIN_BACKENDS,
    ROLES,
    Backend,
    BackendBase,
    RunExtra,
    RunResult,
    get_backend,
    list_backends,
)
from greenllm.carbon import get_gpu
from greenllm.config import ConfigKind, Configuration, Workload
from greenllm.errors import BackendClosedError, BackendUnavailableError, ConfigError
from greenllm.profiler.store import ProfileRecord
from greenllm.workloads import RequestSet
from greenllm.workloads import workload as app_workload

SPEC_KINDS = {ConfigKind.SPEC_DECODE, ConfigKind.DSD}
LINK_KINDS = {ConfigKind.DPD, ConfigKind.DSD}
CONFIGS = {
    ConfigKind.STANDALONE: Configuration(kind="standalone", target_model="llama-1b"),
    ConfigKind.SPEC_DECODE: Configuration(
        kind="spec_decode", target_model="llama-1b", draft_model="llama-300m"
    ),
    ConfigKind.DPD: Configuration(kind="dpd", old_gpu="T4", target_model="llama-1b"),
    ConfigKind.DSD: Configuration(
        kind="dsd", old_gpu="T4", target_model="llama-1b", draft_model="llama-300m"
    ),
}
# Backends that serve real weights name real models (an alias or a local folder) instead of the
# simulator's. The vLLM backend drafts with the target itself, so speculation accepts tokens.
# The torch backend drafts with the SmolLM2 draft (distilled if cached, else layer-skip).
REAL_MODELS: dict[str, tuple[str, str]] = {
    "vllm": ("smollm2-135m", "smollm2-135m"),
    "torch": ("smollm2-135m", "smollm2-135m-draft"),
}
# Backends that serve in real time: two runs never give identical timings.
REAL_TIME = {"torch", "vllm"}
WORKLOAD: Workload = app_workload("sharegpt", 1.0, size="p25")
REQUESTS = RequestSet.poisson(WORKLOAD.qps, WORKLOAD.request_size, n=5, seed=0)


def _has_gpu() -> bool:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


def _open(name: str) -> Backend:
    try:
        backend = get_backend(name)
    except BackendUnavailableError as err:
        pytest.skip(f"backend {name!r} cannot be imported here: {err}")
    if backend.capabilities().needs_gpu and not _has_gpu():
        backend.close()
        pytest.skip(f"backend {name!r} needs a GPU")
    return backend


@pytest.fixture(scope="module", params=sorted(list_backends()))
def backend_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def backend(backend_name: str) -> Iterator[Backend]:
    b = _open(backend_name)
    yield b
    b.close()


@pytest.fixture(scope="module")
def configs(backend_name: str) -> dict[ConfigKind, Configuration]:
    """CONFIGS with the backend's own models (REAL_MODELS) where it has them."""
    if backend_name not in REAL_MODELS:
        return CONFIGS
    target, draft = REAL_MODELS[backend_name]
    return {
        kind: c.model_copy(
            update={"target_model": target} | ({"draft_model": draft} if c.draft_model else {})
        )
        for kind, c in CONFIGS.items()
    }


@pytest.fixture(scope="module")
def results(
    backend: Backend, configs: dict[ConfigKind, Configuration]
) -> dict[ConfigKind, RunResult]:
    """One run per supported kind, shared by the tests of this module."""
    kinds = backend.capabilities().kinds
    return {
        kind: backend.run(configs[kind], WORKLOAD, requests=REQUESTS, seed=0)
        for kind in ConfigKind
        if kind in kinds
    }


def check_run(result: RunResult, configuration: Configuration, requests: RequestSet) -> None:
    """Assert every invariant of a run of ``requests`` at low load."""
    kind = configuration.kind
    assert result.configuration == configuration and result.workload == WORKLOAD
    r = result.requests
    assert len(r) == len(requests)  # one timing per request, in request order
    np.testing.assert_array_equal(r.arrival_s, requests.arrival_s)
    np.testing.assert_array_equal(r.input_tokens, requests.input_tokens)
    np.testing.assert_array_equal(r.output_tokens, requests.output_tokens)
    assert r.served.all() and not result.overloaded  # 5 requests at 1 QPS: nothing may fail
    assert np.all(r.first_token_s >= r.arrival_s)
    assert np.all(r.finish_s >= r.first_token_s)
    assert np.all(np.isfinite(r.ttft_s)) and np.all(r.ttft_s > 0)
    if r.token_times_s is not None:
        for i in range(len(r)):
            times = r.tokens_of(i)
            assert len(times) == r.output_tokens[i] and np.all(np.diff(times) >= 0)
            assert times[0] == pytest.approx(r.first_token_s[i])
            assert times[-1] == pytest.approx(r.finish_s[i])
    assert result.output_tokens == int(requests.output_tokens.sum())
    assert result.duration_s > 0

    assert tuple(g.gpu for g in result.gpus) == configuration.gpus  # new GPU first
    assert tuple(g.role for g in result.gpus) == ROLES[kind]
    for g in result.gpus:
        spec = get_gpu(g.gpu)
        assert g.allocated_s > 0 and 0 <= g.busy_s <= g.allocated_s * (1 + 1e-9) + 1e-9
        tol = 0.01 * spec.max_power_w * g.allocated_s + 1e-3
        assert spec.idle_power_w * g.allocated_s - tol <= g.energy_j
        assert g.energy_j <= spec.max_power_w * g.allocated_s + tol
        assert len(g.power_times_s) == len(g.power_w)
        if len(g.power_w):
            assert np.all(g.power_w <= spec.max_power_w * 1.01)

    assert (result.link_bytes > 0) == (kind in LINK_KINDS)
    if kind in SPEC_KINDS:
        assert result.spec_proposed_tokens >= result.spec_accepted_tokens > 0
        assert 0 < result.acceptance_rate <= 1
    else:
        assert result.spec_proposed_tokens == result.spec_accepted_tokens == 0
        assert math.isnan(result.acceptance_rate)

    record = ProfileRecord.from_run(result)
    assert ProfileRecord.model_validate_json(record.model_dump_json()) == record
    assert record.n_requests == len(requests) and record.link_bytes == result.link_bytes
    assert record.output_tokens == result.output_tokens
    assert [u.energy_j for u in record.gpus] == [g.energy_j for g in result.gpus]
    assert record.slo_attainment == pytest.approx(result.slo_attainment())


def test_is_a_backend(backend: Backend) -> None:
    assert isinstance(backend, Backend) and isinstance(backend.name, str) and backend.name
    caps = backend.capabilities()
    assert caps.kinds and caps.kinds <= set(ConfigKind)
    assert caps.energy in ("measured", "modelled")


@pytest.mark.parametrize("kind", list(ConfigKind), ids=lambda k: k.value)
def test_run_satisfies_the_invariants(
    backend: Backend,
    results: dict[ConfigKind, RunResult],
    configs: dict[ConfigKind, Configuration],
    kind: ConfigKind,
) -> None:
    if kind not in results:
        with pytest.raises(ConfigError, match=kind.label):
            backend.run(configs[kind], WORKLOAD, requests=REQUESTS, seed=0)
        return
    result = results[kind]
    assert result.backend == backend.name and result.seed == 0
    check_run(result, configs[kind], REQUESTS)


def test_modelled_runs_are_deterministic(
    backend: Backend,
    results: dict[ConfigKind, RunResult],
    configs: dict[ConfigKind, Configuration],
) -> None:
    if backend.capabilities().energy != "modelled":
        pytest.skip("measured energy is not reproducible")
    if backend.name in REAL_TIME:
        pytest.skip(f"backend {backend.name!r} serves in real time: its timings vary run to run")
    kind = next(iter(results))
    again = backend.run(configs[kind], WORKLOAD, requests=REQUESTS, seed=0)
    first = results[kind]
    np.testing.assert_array_equal(again.requests.finish_s, first.requests.finish_s)
    assert [g.energy_j for g in again.gpus] == [g.energy_j for g in first.gpus]


def check_extra(result: RunResult, requests: RequestSet) -> None:
    """The common keys of ``RunResult.extra`` (RunExtra) have one spelling and one meaning."""
    x = result.extra
    assert set(x) & {"device", "deterministic"} == set()  # old spellings
    assert set(RunExtra.__annotations__) >= {"devices", "token_ids", "energy_model", "wall_s"}
    if "devices" in x:
        assert set(x["devices"]) == {"new", "old"} and isinstance(x["devices"]["new"], str)
        assert (x["devices"]["old"] is None) == (len(result.gpus) == 1)
    if "token_ids" in x:
        assert [len(t) for t in x["token_ids"]] == requests.output_tokens.tolist()
    if "energy_model" in x:
        assert x["energy_model"].split(":")[0] == result.energy
    if "acceptance_rate" in x and result.spec_proposed_tokens:
        assert 0 <= x["acceptance_rate"] <= 1
    if "wall_s" in x:
        assert isinstance(x["wall_s"], float) and x["wall_s"] >= 0


def test_common_extra_keys(results: dict[ConfigKind, RunResult]) -> None:
    for result in results.values():
        check_extra(result, REQUESTS)


def test_close_is_idempotent(backend_name: str) -> None:
    fresh = _open(backend_name)
    fresh.close()
    fresh.close()


def test_a_closed_backend_refuses_to_run(
    backend_name: str, configs: dict[ConfigKind, Configuration]
) -> None:
    """Every built-in backend: ``with`` closes it, and a closed backend raises the same typed
    error before starting anything."""
    if backend_name not in BUILTIN_BACKENDS:
        pytest.skip(f"{backend_name!r} is a plugin: BackendBase is not required")
    with _open(backend_name) as fresh:
        assert isinstance(fresh, BackendBase) and not fresh.closed
    assert fresh.closed
    fresh.close()  # idempotent after the with-block
    kind = next(iter(fresh.capabilities().kinds))
    for _ in range(2):
        with pytest.raises(BackendClosedError, match="closed"):
            fresh.run(configs[kind], WORKLOAD, requests=REQUESTS, seed=0)
    with pytest.raises(BackendClosedError):
        fresh.run(configs[kind], WORKLOAD)  # before the argument checks (no requests here)


def test_the_checks_catch_broken_results(
    results: dict[ConfigKind, RunResult], configs: dict[ConfigKind, Configuration]
) -> None:
    """The invariants can fail: each mutation of a valid result is caught."""
    kind, good = next(iter(results.items()))
    r = good.requests
    early = dataclasses.replace(r, first_token_s=r.arrival_s - 0.01)
    mutations = [
        dataclasses.replace(good, requests=early),
        dataclasses.replace(good, gpus=tuple(reversed(good.gpus)) if len(good.gpus) > 1 else ()),
        dataclasses.replace(good, link_bytes=0 if kind in LINK_KINDS else 1),
        dataclasses.replace(
            good, gpus=tuple(dataclasses.replace(g, energy_j=0.0) for g in good.gpus)
        ),
    ]
    for bad in mutations:
        with pytest.raises(AssertionError):
            check_run(bad, configs[kind], REQUESTS)
    for extra in ({**good.extra, "device": "cpu"}, {**good.extra, "wall_s": -1.0}):
        with pytest.raises(AssertionError):
            check_extra(dataclasses.replace(good, extra=extra), REQUESTS)


def test_carbon_by_region_works_like_its_intensity(results: dict[ConfigKind, RunResult]) -> None:
    """``carbon(region=...)`` prices the run at the region's annual intensity; giving both
    ``region`` and ``intensity_g_per_kwh`` is a ConfigError; neither is CISO's 261 g/kWh."""
    from greenllm.carbon import carbon_intensity

    for result in results.values():
        for region in ("CISO", "MISO", "FRA"):
            by_region = result.carbon(region=region)
            assert by_region == result.carbon(carbon_intensity(region))
            assert by_region == result.carbon(intensity_g_per_kwh=carbon_intensity(region))
        assert result.carbon() == result.carbon(261.0)
        assert result.carbon(region="CISO", lifetime_years={"T4": 10, "default": 7}) == (
            result.carbon(carbon_intensity("CISO"), {"T4": 10, "default": 7})
        )
        with pytest.raises(ConfigError, match="not both"):
            result.carbon(300.0, region="CISO")
        for bad in ("", "   ", "Atlantis", 5, b"CISO"):
            with pytest.raises(ConfigError):
                result.carbon(region=bad)  # type: ignore[arg-type]
        for bad_ci in (float("nan"), float("inf"), -1.0, 1e308, "5"):
            with pytest.raises(ConfigError):
                result.carbon(bad_ci)  # type: ignore[arg-type]
