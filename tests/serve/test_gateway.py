"""The gateway core without HTTP: receipts add up, admission, retry, timeouts, cancellation."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.errors import ConfigError
from greenllm.serve import (
    APIError,
    Finished,
    Gateway,
    GatewaySettings,
    GenerationRequest,
    UpstreamError,
)
from tests.serve.fakes import ScriptedUpstream


def request(i: int, max_tokens: int = 5) -> GenerationRequest:
    return GenerationRequest(request_id=f"r{i}", max_tokens=max_tokens, prompt="a b c")


async def drain(gateway: Gateway, req: GenerationRequest, delay_s: float = 0.0) -> Finished:
    await asyncio.sleep(delay_s)
    done = None
    async for event in gateway.generate(req):
        if isinstance(event, Finished):
            done = event
    assert done is not None
    return done


def run(coro):
    return asyncio.run(coro)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(1, 12)), min_size=1, max_size=10))
def test_receipts_add_up_to_the_devices_energy_under_any_concurrency(jobs):
    """The receipts (plus idle time no request carried) equal the devices' energy and carbon,
    under any overlap of requests: the trust issue's meter, now per request. The GPUs draw
    power only while requests run (idle 0 W), so the reference window's edges, which miss the
    ledger's by the milliseconds a loaded machine takes between two calls, change nothing."""

    async def main():
        up = ScriptedUpstream(token_s=0.002, idle_w=0.0, active_w=100.0)
        gw = Gateway(up, region="CISO")
        await gw.start()
        sampler = up.power_sampler()
        sampler.begin_window("outer")
        done = await asyncio.gather(*(
            drain(gw, request(i, n), delay_ms / 1000) for i, (delay_ms, n) in enumerate(jobs)
        ))  # fmt: skip
        await asyncio.sleep(0.02)
        rest = gw.ledger.close_idle()
        outer = sampler.end_window("outer")
        await gw.stop()
        return done, rest, outer, gw

    done, rest, outer, gw = run(main())
    receipts = [d.receipt for d in done]
    device_j = sum(outer.energy_j.values())  # 0 if no power sample fell inside a request
    charged_j = sum(sum(r.energy_j.values()) for r in receipts) + sum(rest.energy_j.values())
    assert charged_j == pytest.approx(device_j, rel=0.01, abs=1e-9)
    for key, joules in outer.energy_j.items():
        got = sum(r.energy_j.get(key, 0.0) for r in receipts) + rest.energy_j.get(key, 0.0)
        assert got == pytest.approx(joules, rel=0.01, abs=1e-9)
    operational = sum(r.operational_g for r in receipts) + rest.operational_g
    assert operational == pytest.approx(
        device_j / 3.6e6 * 261.0, rel=0.01, abs=1e-12
    )  # CISO, Eq. 2
    # Eq. 1: both GPUs' embodied carbon over the whole stretch (allocated time, idle included)
    from greenllm.carbon import embodied_carbon_g

    expected = sum(embodied_carbon_g(outer.duration_s, g, 7.0) for g in ("A100", "T4"))
    embodied = sum(r.embodied_g for r in receipts) + rest.embodied_g
    assert embodied == pytest.approx(expected, rel=0.05)
    for d, (_, n) in zip(done, jobs, strict=True):
        assert d.completion_tokens == n and d.finish_reason == "length"
        assert d.receipt.embodied_g > 0 and math.isfinite(d.receipt.total_g)
        assert d.receipt.energy_source == "modelled"
    assert gw.ledger.totals.requests == len(jobs)


def test_the_first_request_after_idle_carries_the_idle_energy():
    async def main():
        up = ScriptedUpstream(idle_w=100.0, active_w=0.0)
        gw = Gateway(up, intensity_g_per_kwh=500.0)
        await gw.start()
        await asyncio.sleep(0.2)
        first = await drain(gw, request(0))
        second = await drain(gw, request(1))
        await gw.stop()
        return first.receipt, second.receipt

    first, second = run(main())
    assert first.idle_energy_j == pytest.approx(2 * 100.0 * 0.2, rel=0.2)  # 2 GPUs idle 0.2 s
    assert first.idle_energy_j > 5 * second.idle_energy_j
    assert first.intensity_g_per_kwh == pytest.approx(500.0)
    assert set(first.energy_j) == {"target:A100", "draft:T4"}


def test_a_failure_before_the_first_token_is_retried_once():
    async def main(fails):
        up = ScriptedUpstream(fail_before_first=fails)
        gw = Gateway(up)
        await gw.start()
        try:
            return await drain(gw, request(0)), up.attempts
        finally:
            await gw.stop()

    done, attempts = run(main(1))
    assert attempts == 2 and done.completion_tokens == 5
    with pytest.raises(UpstreamError, match="before the first token"):
        run(main(2))


def test_a_failure_mid_stream_is_not_retried_and_is_counted():
    async def main():
        up = ScriptedUpstream(fail_after_tokens=2)
        gw = Gateway(up)
        await gw.start()
        got = []
        with pytest.raises(UpstreamError, match="mid-stream"):
            async for e in gw.generate(request(0)):
                got.append(e)
        await gw.stop()
        return got, up.attempts, gw

    got, attempts, gw = run(main())
    assert len(got) == 2 and attempts == 1
    assert gw.metrics.requests.labels("error")._value.get() == 1
    assert gw.inflight == 0


def test_a_silent_upstream_times_out_instead_of_hanging():
    async def main():
        up = ScriptedUpstream(hang_after_tokens=1)
        gw = Gateway(up, GatewaySettings(chunk_timeout_s=0.2))
        await gw.start()
        try:
            with pytest.raises(UpstreamError, match=r"sent nothing for 0\.2 s"):
                await drain(gw, request(0))
        finally:
            await gw.stop()
        return up

    up = run(main())
    assert up.cancelled == 1 and up.active == 0


def test_closing_the_stream_cancels_the_upstream_work():
    async def main():
        up = ScriptedUpstream(token_s=0.01)
        gw = Gateway(up)
        await gw.start()
        events = gw.generate(request(0, max_tokens=50))
        await anext(events)
        await anext(events)
        await events.aclose()
        counters = (up.cancelled, up.active, gw.inflight)
        cancelled = gw.metrics.requests.labels("cancelled")._value.get()
        await gw.stop()
        return counters, cancelled

    (cancelled, active, inflight), metric = run(main())
    assert (cancelled, active, inflight, metric) == (1, 0, 0, 1)


def test_admission_is_bounded_with_429_and_retry_after():
    async def main():
        up = ScriptedUpstream(token_s=0.01)
        gw = Gateway(up, GatewaySettings(max_inflight=2, retry_after_s=3))
        await gw.start()
        a = gw.generate(request(0, 20))
        b = gw.generate(request(1, 20))
        await anext(a)
        await anext(b)
        with pytest.raises(APIError) as err:
            await anext(gw.generate(request(2)))
        await a.aclose()
        await b.aclose()
        ok = await drain(gw, request(3))  # capacity is back
        await gw.stop()
        return err.value, ok

    err, ok = run(main())
    assert err.status == 429 and err.headers["Retry-After"] == "3"
    assert ok.completion_tokens == 5


def test_stop_drains_in_flight_requests_and_refuses_new_ones():
    async def main():
        up = ScriptedUpstream(token_s=0.01)
        gw = Gateway(up)
        await gw.start()
        job = asyncio.ensure_future(drain(gw, request(0, 20)))
        await asyncio.sleep(0.03)
        stopping = asyncio.ensure_future(gw.stop())
        await asyncio.sleep(0)
        assert not gw.ready
        with pytest.raises(APIError) as err:
            gw.admit()
        done = await job
        await stopping
        return err.value, done, up

    err, done, up = run(main())
    assert err.status == 503
    assert done.completion_tokens == 20 and up.stopped == 1


@pytest.mark.parametrize(
    "field, value",
    [("max_inflight", 0), ("max_inflight", True), ("chunk_timeout_s", math.nan),
     ("chunk_timeout_s", -1), ("drain_timeout_s", math.inf), ("api_key", ""),
     ("default_max_tokens", 10_000)],
)  # fmt: skip
def test_settings_refuse_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        GatewaySettings(**{field: value})


def test_a_dead_upstream_is_recovered_with_backoff_and_not_ready_meanwhile():
    async def main():
        up = ScriptedUpstream()
        up.fail_recoveries = 2
        settings = GatewaySettings(health_period_s=0.02, restart_backoff_s=(0.05, 0.1))
        gw = Gateway(up, settings, region="CISO")
        await gw.start()
        try:
            await drain(gw, request(0))
            up.crash()
            assert not gw.ready
            with pytest.raises(APIError) as err:
                gw.admit()
            assert err.value.status == 503
            t0 = asyncio.get_running_loop().time()
            for _ in range(200):  # bounded: 2 failed tries (0.05 s, 0.1 s backoff), then up
                if gw.ready:
                    break
                await asyncio.sleep(0.01)
            waited = asyncio.get_running_loop().time() - t0
            assert gw.ready and up.recover_calls == 3 and gw.recoveries == 1
            assert waited >= 0.15  # the two backoff waits happened
            done = await drain(gw, request(1))
            assert done.finish_reason == "length"
        finally:
            await gw.stop()

    run(main())


def test_settings_refuse_a_bad_backoff():
    for bad in ((0.0, 1.0), (2.0, 1.0), (-1.0, -1.0)):
        with pytest.raises(ConfigError, match="restart_backoff_s"):
            GatewaySettings(restart_backoff_s=bad)
    with pytest.raises(ConfigError, match="health_period_s"):
        GatewaySettings(health_period_s=0)
