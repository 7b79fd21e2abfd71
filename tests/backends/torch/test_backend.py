"""TorchBackend on tiny random Llama folders: real worker processes and torch.distributed links.

The shared conformance test (test_conformance.py) runs it on SmolLM2; here the point is the
mechanics, so the models are tiny and one backend (three engines) serves every test.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from greenllm.backends import Backend, RunResult
from greenllm.config import Configuration, Workload
from greenllm.errors import BackendClosedError, ConfigError
from greenllm.profiler.store import ProfileRecord
from greenllm.workloads import RequestSet
from greenllm.workloads import workload as app_workload
from tests.engine.helpers import save_target_and_draft
from tests.extras import require

torch = require("torch")
require("transformers")

WORKLOAD: Workload = app_workload("sharegpt", 2.0, size="p25")
# Two requests close together (the second arrives while the first is served), one much later.
REQUESTS = RequestSet(
    arrival_s=np.array([0.0, 0.05, 0.8]),
    input_tokens=np.array([9, 17, 4]),
    output_tokens=np.array([11, 6, 14]),
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny target and, as draft, a copy perturbed by 2% of each weight's std (acceptance
    well between 0 and 1)."""
    from greenllm.engine import tiny_llama

    root = Path(tmp_path_factory.mktemp("torch-backend"))
    target = tiny_llama(vocab_size=256, hidden_size=64, n_layers=4, seed=0,
                        initializer_range=0.1)  # fmt: skip
    return save_target_and_draft(target, root)


@pytest.fixture(scope="module")
def backend() -> Iterator[Any]:
    from greenllm.backends.torch import TorchBackend

    b = TorchBackend(threads=1)
    yield b
    b.close()


def _cfg(kind: str, folders: dict[str, str]) -> Configuration:
    kw: dict[str, Any] = {"kind": kind, "target_model": folders["target"]}
    if kind in ("spec_decode", "dsd"):
        kw["draft_model"] = folders["draft"]
    if kind in ("dsd", "dpd"):
        kw["old_gpu"] = "T4"
    return Configuration(**kw)


@pytest.fixture(scope="module")
def runs(backend: Any, folders: dict[str, str]) -> dict[str, RunResult]:
    return {kind: backend.run(_cfg(kind, folders), WORKLOAD, requests=REQUESTS, seed=0)
            for kind in ("standalone", "dsd", "dpd")}  # fmt: skip


def _reference(folder: str, prompts: list[list[int]], sizes: np.ndarray) -> list[list[int]]:
    from greenllm.engine import SamplingParams, autoregressive_generate, load_model

    model, _ = load_model(folder)
    return [autoregressive_generate(model, p, SamplingParams(max_tokens=int(n))).tokens
            for p, n in zip(prompts, sizes, strict=True)]  # fmt: skip


def test_is_a_backend(backend: Any) -> None:
    assert isinstance(backend, Backend) and backend.name == "torch"
    caps = backend.capabilities()
    assert {k.value for k in caps.kinds} == {"standalone", "spec_decode", "dsd", "dpd"}
    assert caps.energy == "modelled"  # no NVML on this machine


@pytest.mark.parametrize("kind", ["standalone", "dsd", "dpd"])
def test_run_invariants_and_exact_greedy_tokens(
    runs: dict[str, RunResult], folders: dict[str, str], kind: str
) -> None:
    r = runs[kind]
    t = r.requests
    assert r.backend == "torch" and t.served.all()
    np.testing.assert_array_equal(t.arrival_s, REQUESTS.arrival_s)
    # open loop: never submitted before its arrival, never answered before its submission
    submit = np.asarray(r.extra["submit_s"])
    assert np.all(submit >= t.arrival_s) and np.all(submit - t.arrival_s < 0.5)
    assert np.all(t.first_token_s >= submit) and np.all(t.finish_s >= t.first_token_s)
    assert t.first_token_s[2] >= 0.8  # the late request really waited for its arrival
    for i in range(len(t)):  # exactly output_tokens tokens, one time each, non-decreasing
        assert len(r.extra["token_ids"][i]) == REQUESTS.output_tokens[i]
        assert len(t.tokens_of(i)) == REQUESTS.output_tokens[i]
        assert np.all(np.diff(t.tokens_of(i)) >= 0)
    assert r.duration_s == pytest.approx(float(t.finish_s.max()))
    assert r.extra["devices"] == {"new": "cpu", "old": None if kind == "standalone" else "cpu"}
    # greedy: every configuration reproduces the target alone, token for token
    from greenllm.backends.torch.support import build_prompts

    prompts = build_prompts(REQUESTS, None, folders["target"], 0)
    assert r.extra["token_ids"] == _reference(folders["target"], prompts, REQUESTS.output_tokens)
    for g in r.gpus:
        assert 0 < g.busy_s <= g.allocated_s == r.duration_s
        assert g.energy_j > 0 and len(g.power_w) == len(g.power_times_s) > 0
    rec = ProfileRecord.from_run(r)
    assert rec.n_requests == 3 and rec.output_tokens == 31 and rec.link_bytes == r.link_bytes


def test_link_bytes_by_kind(runs: dict[str, RunResult]) -> None:
    assert runs["standalone"].link_bytes == 0
    dsd, dpd = runs["dsd"].extra["link_bytes_by_category"], runs["dpd"].extra[
        "link_bytes_by_category"]  # fmt: skip
    assert dsd["old_to_new"]["ids"] > 0 and dsd["old_to_new"]["probs"] > 0
    assert dpd["new_to_old"]["kv"] > 0  # the KV cache went from the prefill to the decode worker
    for kind in ("dsd", "dpd"):
        by = runs[kind].extra["link_bytes_by_category"]
        total = sum(by["new_to_old"].values()) + sum(by["old_to_new"].values())
        assert runs[kind].link_bytes == total > 0


def test_dsd_acceptance_matches_engine_stats(runs: dict[str, RunResult]) -> None:
    r = runs["dsd"]
    stats = r.extra["engine_stats"]
    assert r.spec_proposed_tokens == stats["proposed_tokens"] > 0
    assert r.spec_accepted_tokens == stats["accepted_tokens"] > 0
    assert 0 < r.acceptance_rate < 1
    assert r.extra["acceptance_rate"] == pytest.approx(r.acceptance_rate)
    assert r.gpus[1].role == "draft" and r.gpus[1].busy_s > 0
    for kind in ("standalone", "dpd"):
        assert runs[kind].spec_proposed_tokens == 0 and math.isnan(runs[kind].acceptance_rate)


def test_engine_reused_and_counters_per_run(
    backend: Any, runs: dict[str, RunResult], folders: dict[str, str]
) -> None:
    engine = backend.engine_for(_cfg("dsd", folders))
    pids = [w["pid"] for w in engine.workers]
    again = backend.run(_cfg("dsd", folders), WORKLOAD, requests=REQUESTS, seed=0)
    assert backend.engine_for(_cfg("dsd", folders)) is engine
    assert [w["pid"] for w in engine.workers] == pids and len(backend.engines) == 3
    # counters are this run's only: same greedy work, same draft proposals
    assert again.extra["token_ids"] == runs["dsd"].extra["token_ids"]
    assert again.spec_proposed_tokens == runs["dsd"].spec_proposed_tokens
    assert again.extra["engine_stats"]["proposed_tokens"] == again.spec_proposed_tokens


def test_unknown_model_is_a_config_error(backend: Any) -> None:
    n = len(backend.engines)
    cfg = Configuration(kind="standalone", target_model="llama-1b")
    with pytest.raises(ConfigError, match=r"llama-1b.*smollm2-135m"):
        backend.run(cfg, WORKLOAD, requests=REQUESTS)
    assert len(backend.engines) == n  # nothing was started


def test_bad_arguments(backend: Any, folders: dict[str, str]) -> None:
    from greenllm.backends.torch import TorchBackend

    cfg = _cfg("standalone", folders)
    with pytest.raises(ConfigError, match="exactly one"):
        backend.run(cfg, WORKLOAD)
    with pytest.raises(ConfigError, match="seed"):
        backend.run(cfg, WORKLOAD, requests=REQUESTS, seed=-1)
    with pytest.raises(ConfigError, match="max_engines"):
        TorchBackend(max_engines=0)
    long = RequestSet(arrival_s=np.zeros(1), input_tokens=np.array([5000]),
                      output_tokens=np.array([5000]))  # fmt: skip
    with pytest.raises(ConfigError, match="context"):
        backend.run(cfg, WORKLOAD, requests=long)


def test_activity_intervals_spread_the_measured_busy_time() -> None:
    from greenllm.backends.torch.support import activity_intervals
    from greenllm.slo import RequestTimings

    t = RequestTimings(np.array([0.0, 0.5, 3.0]), np.array([0.1, 0.6, 3.1]),
                       np.array([1.0, 2.0, 4.0]), np.ones(3), np.ones(3))  # fmt: skip
    s, e, u = activity_intervals(t, busy_s=1.5, duration_s=4.0)
    np.testing.assert_allclose(s, [0.0, 3.0])
    np.testing.assert_allclose(e, [2.0, 4.0])
    np.testing.assert_allclose(u, [0.5, 0.5])  # 1.5 busy seconds over 3 active seconds
    assert activity_intervals(t, busy_s=10.0, duration_s=4.0)[2][0] == 1.0  # capped


def test_close_is_idempotent_and_leaves_no_workers(
    backend: Any, runs: dict[str, RunResult], folders: dict[str, str]
) -> None:
    """Last test of the module: closes the shared backend (its fixture closes it again)."""
    pids = [w["pid"] for e in backend.engines for w in e.workers]
    assert len(pids) == 5 and all(Path(f"/proc/{p}").exists() for p in pids)  # 1 + 2 + 2
    backend.close()
    backend.close()
    assert backend.engines == []
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    with pytest.raises(BackendClosedError, match="closed"):
        backend.run(_cfg("dpd", folders), WORKLOAD, requests=REQUESTS)
    with pytest.raises(BackendClosedError):
        backend.engine_for(_cfg("dpd", folders))  # nor are engines started
    assert backend.engines == []
