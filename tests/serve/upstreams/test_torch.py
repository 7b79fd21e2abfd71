"""The ``torch`` upstream on SmolLM2-135M (CPU): greedy text equal to ``Engine.generate``'s,
the chat template, stop strings, cancellation, errors and the modelled power sampler."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.extras import require

torch = require("torch")
require("transformers")

from greenllm.config import Configuration
from greenllm.engine import RequestOutput, TokenEvent
from greenllm.errors import WorkerError
from greenllm.serve.upstream import GenerationRequest, TokenChunk, UpstreamError
from greenllm.serve.upstreams.torch import TorchUpstream, held_back_chars

PROMPT = "def add(a, b):"
N = 10


@pytest.fixture(scope="module")
def upstream() -> Any:
    up = TorchUpstream("standalone", target="smollm2-135m")
    asyncio.run(up.start())
    try:
        yield up
    finally:
        asyncio.run(up.stop())


async def _chunks(up: TorchUpstream, request: GenerationRequest) -> list[TokenChunk]:
    return [c async for c in up.stream(request)]


def _text(chunks: list[TokenChunk]) -> str:
    return "".join(c.text for c in chunks)


def _check_last(chunks: list[TokenChunk], reason: str, prompt_tokens: int) -> None:
    assert chunks[-1].finish_reason == reason
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert chunks[-1].prompt_tokens == prompt_tokens
    assert chunks[-1].completion_tokens == sum(len(c.token_ids) for c in chunks)


def test_greedy_text_equals_engine_generate_and_chat_template(upstream: TorchUpstream) -> None:
    tok = upstream.tokenizer
    messages = ({"role": "user", "content": "Say hello in French."},)
    chat_ids = tok.apply_chat_template(list(messages), add_generation_prompt=True,
                                       tokenize=True, return_dict=False)  # fmt: skip
    text_req = GenerationRequest("a", max_tokens=N, prompt=PROMPT, temperature=0.0,
                                 ignore_eos=True)  # fmt: skip
    chat_req = GenerationRequest("b", max_tokens=N, messages=messages, temperature=0.0)
    ids_req = GenerationRequest("c", max_tokens=N, prompt=tuple(tok(PROMPT)["input_ids"]),
                                temperature=0.0, ignore_eos=True)  # fmt: skip
    assert upstream.encode(chat_req) == list(chat_ids)
    assert "<|im_start|>assistant" in tok.decode(upstream.encode(chat_req))

    async def scenario() -> tuple[Any, ...]:
        return await asyncio.gather(
            _chunks(upstream, text_req), _chunks(upstream, chat_req), _chunks(upstream, ids_req),
            upstream.engine.generate(PROMPT, upstream.sampling(text_req)),
            upstream.engine.generate(list(chat_ids), upstream.sampling(chat_req)),
        )  # fmt: skip

    text_chunks, chat_chunks, ids_chunks, text_out, chat_out = asyncio.run(scenario())
    assert _text(text_chunks) == text_out.text and text_out.text
    assert _text(ids_chunks) == text_out.text
    _check_last(text_chunks, "length", len(tok(PROMPT)["input_ids"]))
    assert [t for c in text_chunks for t in c.token_ids] == list(text_out.tokens)
    assert _text(chat_chunks) == chat_out.text and chat_out.text
    reason = "stop" if chat_out.finish_reason == "stop" else "length"
    _check_last(chat_chunks, reason, len(chat_ids))
    times = [c.time_s for c in text_chunks]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 120


def test_stop_string_cuts_the_text_and_aborts_the_rest(upstream: TorchUpstream) -> None:
    base = GenerationRequest("r", max_tokens=N, prompt=PROMPT, temperature=0.0, ignore_eos=True)
    ref = _text(asyncio.run(_chunks(upstream, base)))
    words = ref.split()
    assert len(words) >= 3, ref
    stop = words[2]  # a word in the middle of the greedy text
    request = GenerationRequest("s", max_tokens=200, prompt=PROMPT, temperature=0.0,
                                ignore_eos=True, stop=(stop, "never-seen-stop"))  # fmt: skip
    start = time.monotonic()
    chunks = asyncio.run(_chunks(upstream, request))
    assert _text(chunks) == ref[: ref.index(stop)]
    assert stop not in _text(chunks)
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].completion_tokens is not None and chunks[-1].completion_tokens < N
    deadline = time.monotonic() + 30
    while upstream.engine.in_flight():  # the rest of the 200 tokens was aborted
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert time.monotonic() - start < 60


def test_cancelling_the_stream_aborts_the_request(upstream: TorchUpstream) -> None:
    request = GenerationRequest("x", max_tokens=300, prompt=PROMPT, temperature=0.0,
                                ignore_eos=True)  # fmt: skip

    async def scenario() -> int:
        before = upstream.stats().extra
        stream = upstream.stream(request)
        first = await stream.__anext__()
        assert first.finish_reason is None and first.token_ids
        await stream.aclose()
        deadline = time.monotonic() + 30
        while upstream.engine.in_flight():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        # the engine goes on serving
        again = await _chunks(
            upstream,
            GenerationRequest("y", max_tokens=3, prompt=PROMPT, temperature=0.0, ignore_eos=True),
        )
        assert again[-1].completion_tokens == 3
        return int(before["requests_in_flight"])

    assert asyncio.run(scenario()) == 0
    stats = upstream.stats()
    assert stats.extra["requests_in_flight"] == 0 and stats.extra["busy_s:target:A100"] > 0
    assert stats.spec_proposed_tokens == 0


def test_devices_and_modelled_power(upstream: TorchUpstream) -> None:
    assert [d.key for d in upstream.devices] == ["target:A100"]
    assert upstream.energy_source == "modelled" and upstream.ready
    sampler = upstream.power_sampler()
    assert sampler is upstream.power_sampler()
    with sampler:
        sampler.begin_window("w")
        time.sleep(0.5)
        m = sampler.end_window("w")
    assert m.energy_j["target:A100"] > 0


def _fake_stream(events: list[Any]) -> Any:
    async def stream(*_args: Any, **_kwargs: Any) -> AsyncIterator[TokenEvent]:
        for item in events:
            if isinstance(item, BaseException):
                raise item
            yield item

    return stream


def test_engine_failures_are_upstream_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    up = TorchUpstream(Configuration(kind="dpd", old_gpu="V100", target_model="smollm2-135m"))
    assert [d.key for d in up.devices] == ["prefill:A100", "decode:V100"]
    request = GenerationRequest("e", max_tokens=4, prompt=(5, 6, 7))
    with pytest.raises(UpstreamError, match="not running") as info:
        asyncio.run(_chunks(up, request))
    assert info.value.retryable
    monkeypatch.setattr(up, "_running", True)
    monkeypatch.setattr(up.engine, "stream", _fake_stream([WorkerError("lost")]))
    with pytest.raises(UpstreamError, match="lost") as info:
        asyncio.run(_chunks(up, request))
    assert info.value.retryable  # nothing streamed yet
    out = RequestOutput(1, (5, 6, 7), (9,), "", (1.0,), 0.0, "length")
    monkeypatch.setattr(up.engine, "stream", _fake_stream(
        [TokenEvent(1, (9,), (1.0,)), WorkerError("lost later"), TokenEvent(1, (), (), "length",
                                                                          out)]))  # fmt: skip
    got: list[TokenChunk] = []

    async def consume() -> None:
        async for chunk in up.stream(request):
            got.append(chunk)

    with pytest.raises(UpstreamError, match="lost later") as info:
        asyncio.run(consume())
    assert len(got) == 1 and not info.value.retryable


def test_hold_back_keeps_a_possible_stop_string_start() -> None:
    assert held_back_chars("hello wor", ("world",)) == 3
    assert held_back_chars("hello", ("xyz",)) == 0
    assert held_back_chars("ab", ("abc", "b")) == 2
    assert held_back_chars("anything", ()) == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dpd", "dsd"])
def test_disaggregated_greedy_text_equals_standalone(upstream: TorchUpstream, kind: str) -> None:
    request = GenerationRequest("d", max_tokens=6, prompt=PROMPT, temperature=0.0,
                                ignore_eos=True)  # fmt: skip
    ref = _text(asyncio.run(_chunks(upstream, request)))
    up = TorchUpstream(kind, target="smollm2-135m", k=2)
    asyncio.run(up.start())
    try:
        assert up.ready and len(up.devices) == 2
        chunks = asyncio.run(_chunks(up, request))
        assert _text(chunks) == ref
        _check_last(chunks, "length", len(up.tokenizer(PROMPT)["input_ids"]))
        if kind == "dsd":
            assert up.stats().spec_proposed_tokens > 0
    finally:
        asyncio.run(up.stop())
    assert not up.ready


def test_nvml_power_per_role(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two (fake) GPUs under NVML: measured energy, devices named by role."""
    from tests.energy.test_power import FakeNVML

    nv = require("pynvml")
    fake = FakeNVML(nv, [
        {"name": "NVIDIA A100-SXM4-40GB", "arch": nv.NVML_DEVICE_ARCH_AMPERE,
         "power": lambda t: 300.0},
        {"name": "Tesla T4", "arch": nv.NVML_DEVICE_ARCH_TURING, "power": lambda t: 50.0},
    ])  # fmt: skip
    fake.install(monkeypatch)
    up = TorchUpstream("dsd", draft="smollm2-135m", device_new="cuda:0", device_old="cuda:1")
    assert up.energy_source == "measured"
    sampler = up.power_sampler()
    with sampler:
        assert tuple(sampler.devices) == ("target:A100", "draft:T4")
        sampler.begin_window("w")
        time.sleep(0.5)
        m = sampler.end_window("w")
    duration = m.end_s - m.start_s
    assert m.energy_j["target:A100"] == pytest.approx(300.0 * duration, rel=0.05)
    assert m.energy_j["draft:T4"] == pytest.approx(50.0 * duration, rel=0.05)
    cpu = TorchUpstream("dsd", draft="smollm2-135m")  # CPU workers: modelled
    assert cpu.energy_source == "modelled"


@pytest.mark.slow
def test_engine_killed_mid_load_ends_streams_with_an_error_and_comes_back() -> None:
    """SIGKILL the engine's worker while 4 requests stream through the real HTTP gateway: each
    ends with a ``finish_reason: "error"`` chunk and ``[DONE]`` (none hangs), ``/ready`` turns
    503, the gateway restarts the engine, and a new request gets the greedy text again."""
    import os
    import signal

    httpx = require("httpx")
    require("fastapi")
    require("uvicorn")
    from greenllm.serve import Gateway, GatewaySettings
    from tests.serve.fakes import ServerThread

    up = TorchUpstream("standalone", target="smollm2-135m")
    settings = GatewaySettings(health_period_s=0.2, restart_backoff_s=(0.5, 2.0),
                               chunk_timeout_s=60)  # fmt: skip
    gw = Gateway(up, settings, region="CISO")
    body = {"model": "smollm2-135m", "prompt": PROMPT, "max_tokens": 400, "stream": True,
            "temperature": 0, "ignore_eos": True}  # fmt: skip

    async def load(url: str) -> list[list[dict]]:
        streaming = asyncio.Event()
        started = [0]

        async def one(client: Any) -> list[dict]:
            events, counted = [], False
            async with client.stream("POST", url + "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        done = line == "data: [DONE]"
                        events.append({"done": True} if done else json.loads(line[6:]))
                        if not counted and len(events) >= 2:
                            counted, started[0] = True, started[0] + 1
                            if started[0] == 4:
                                streaming.set()
            return events

        async with httpx.AsyncClient(timeout=120) as client:
            tasks = [asyncio.create_task(one(client)) for _ in range(4)]
            await asyncio.wait_for(streaming.wait(), 120)
            os.kill(up.engine.worker_pid("new"), signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks), 120)

    with ServerThread(gw) as srv:
        assert httpx.get(srv.url + "/ready").status_code == 200
        results = asyncio.run(load(srv.url))
        for events in results:
            assert events[-1] == {"done": True}
            reasons = [e["choices"][0].get("finish_reason") for e in events if e.get("choices")]
            assert [r for r in reasons if r] == ["error"]
            assert events[-2].get("error"), events[-2]
        statuses = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            statuses.append(httpx.get(srv.url + "/ready").status_code)
            if statuses[-1] == 200 and gw.recoveries >= 1:
                break
            time.sleep(0.2)
        assert gw.recoveries == 1 and statuses[-1] == 200 and 503 in statuses, statuses[-5:]
        again = httpx.post(srv.url + "/v1/completions", timeout=120, json={
            **body, "stream": False, "max_tokens": N})  # fmt: skip
        assert again.status_code == 200, again.text
        want = up.engine.generate_batch([PROMPT], up.sampling(GenerationRequest(
            "w", max_tokens=N, prompt=PROMPT, temperature=0.0, ignore_eos=True)))[0]  # fmt: skip
        assert again.json()["choices"][0]["text"] == want.text


@pytest.mark.slow
def test_a_switch_under_load_on_the_engine_drops_nothing() -> None:
    """Standalone -> DSD on greenllm's engine (SmolLM2-135M, CPU workers) while greedy requests
    keep arriving (4 at a time) until the DSD engine is up, and 4 after: every request completes
    with Standalone's text, the first ones on Standalone and the last ones on DSD's two workers,
    and the Standalone engine is stopped after."""
    from greenllm.serve import Finished, Gateway

    request = GenerationRequest("ref", max_tokens=8, prompt=PROMPT, temperature=0.0,
                                ignore_eos=True)  # fmt: skip

    async def main() -> tuple[list[tuple[str, str]], Any, Any]:
        first = TorchUpstream("standalone", target="smollm2-135m")
        gw = Gateway(first)
        await gw.start()
        sem = asyncio.Semaphore(4)

        async def one(i: int) -> tuple[str, str]:
            async with sem:
                label, text = gw.label, ""
                async for e in gw.generate(GenerationRequest(f"r{i}", **{
                        k: getattr(request, k) for k in ("max_tokens", "prompt", "temperature",
                                                         "ignore_eos")})):  # fmt: skip
                    text += "" if isinstance(e, Finished) else e.text
                return label, text

        switching = asyncio.create_task(
            gw.switch(TorchUpstream("dsd", target="smollm2-135m", k=2), "test")
        )
        jobs = []
        for i in range(12):  # requests keep coming while the DSD engine starts
            if switching.done():
                break
            jobs.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.25)
        record = await switching
        jobs += [asyncio.create_task(one(1000 + i)) for i in range(4)]
        out = await asyncio.gather(*jobs)
        await gw.stop()
        return out, record, first

    ref = asyncio.run(_chunks_once(request))
    out, record, first = asyncio.run(main())
    assert [t for _, t in out] == [ref] * len(out)
    labels = [label for label, _ in out]
    assert labels[0].startswith("Standalone") and all(x.startswith("DSD") for x in labels[-4:])
    assert record.start_s > 0 and record.energy_j > 0 and not first.ready


async def _chunks_once(request: GenerationRequest) -> str:
    up = TorchUpstream("standalone", target="smollm2-135m")
    await up.start()
    try:
        return _text(await _chunks(up, request))
    finally:
        await up.stop()
