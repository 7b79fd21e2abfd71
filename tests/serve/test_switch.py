"""Make-before-break switching of the gateway's configuration: no request dropped under load,
each request charged to the GPUs that served it, the switch's own cost, failed switches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from greenllm.config import Configuration
from greenllm.energy import power_model
from greenllm.serve import Finished, Gateway, GenerationRequest, UpstreamError
from greenllm.serve.upstreams.sim import SimUpstream
from tests.serve.fakes import ScriptedUpstream

STANDALONE = Configuration(kind="standalone")
DSD = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b")


def run(coro: Any, timeout_s: float = 120.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def one(gw: Gateway, i: int, n: int = 8) -> tuple[Finished, str]:
    """A request through the gateway; its Finished and the configuration it was admitted on."""
    admitted_on = gw.label
    request = GenerationRequest(f"r{i}", max_tokens=n, prompt=f"request {i}", ignore_eos=True)
    done = None
    async for event in gw.generate(request):
        if isinstance(event, Finished):
            done = event
    assert done is not None
    return done, admitted_on


def test_a_switch_under_load_drops_nothing_and_charges_each_request_to_its_gpus() -> None:
    """300 requests, 32 at a time, on the simulator (50x real time); Standalone -> DSD after
    the first 100 have started: every request completes with all its tokens, requests admitted
    before the switch are charged to Standalone's A100 and the rest to DSD's A100 + T4, the
    old engines stop only after their last request, and the metrics say so."""

    async def main() -> tuple[Gateway, list[tuple[Finished, str]], Any, bool]:
        gw = Gateway(SimUpstream(STANDALONE, time_scale=50), region="CISO")
        await gw.start()
        old = gw.upstream
        sem = asyncio.Semaphore(32)
        started = 0

        async def guarded(i: int) -> tuple[Finished, str]:
            nonlocal started
            async with sem:
                started += 1
                return await one(gw, i)

        jobs = [asyncio.create_task(guarded(i)) for i in range(300)]
        while started < 100:
            await asyncio.sleep(0.005)
        record = await gw.switch(SimUpstream(DSD, time_scale=50), reason="test")
        old_ready_after = old.ready
        results = await asyncio.gather(*jobs)
        await gw.stop()
        return gw, results, record, old_ready_after

    gw, results, record, old_ready_after = run(main())
    assert len(results) == 300
    for done, admitted_on in results:
        assert done.finish_reason == "length" and done.completion_tokens == 8
        assert done.receipt.configuration == admitted_on
        gpus = {k.split(":")[1] for k in done.receipt.energy_j}
        assert gpus == ({"A100"} if admitted_on == STANDALONE.label else {"A100", "T4"})
        assert done.receipt.total_g > 0
    labels = [a for _, a in results]
    assert labels.count(STANDALONE.label) >= 100 and labels.count(DSD.label) >= 100
    assert record.from_label == STANDALONE.label and record.to_label == DSD.label
    assert record.reason == "test" and record.requests_drained > 0 and record.warmup_s > 0
    assert record.energy_j > 0 and record.embodied_g > 0 and record.operational_g > 0
    assert not old_ready_after  # the old engines stopped once their requests were done
    assert [d.label for d in gw.retired] == [STANDALONE.label]
    assert gw.retired[0].totals().requests + gw.ledger.totals.requests == 300
    text = gw.metrics.exposition()[0].decode()
    assert f'greenllm_configuration_info{{label="{DSD.label}"}} 1.0' in text
    assert f'greenllm_configuration_info{{label="{STANDALONE.label}"}} 0.0' in text
    assert "greenllm_configuration_switches_total 1.0" in text
    assert 'greenllm_requests_total{status="ok"} 300.0' in text


class SlowStart(ScriptedUpstream):
    def __init__(self, *args: Any, start_s: float = 0.0, fail_start: bool = False,
                 **kw: Any) -> None:  # fmt: skip
        super().__init__(*args, **kw)
        self.start_s, self.fail_start = start_s, fail_start

    async def start(self) -> None:
        await asyncio.sleep(self.start_s)
        if self.fail_start:
            raise UpstreamError("scripted: the engines did not start")
        await super().start()


def test_the_switch_cost_is_the_engine_start_at_idle_power_and_the_warm_up() -> None:
    """Engines that take 0.3 s to start: the record's energy is at least both GPUs' idle power
    (the power model's) for 0.3 s, and its embodied carbon Eq. 1 over that time at least."""
    from greenllm.carbon import embodied_carbon_g

    async def main() -> Any:
        gw = Gateway(ScriptedUpstream(STANDALONE), intensity_g_per_kwh=400.0)
        await gw.start()
        record = await gw.switch(SlowStart(DSD, start_s=0.3))
        done, label = await one(gw, 0)
        await gw.stop()
        return record, done, label

    record, done, label = run(main())
    idle_w = power_model("A100").power_w(0.0) + power_model("T4").power_w(0.0)
    assert record.start_s >= 0.3
    assert record.energy_j >= idle_w * record.start_s
    assert record.operational_g == pytest.approx(record.energy_j / 3.6e6 * 400.0, rel=1e-6)
    floor = sum(embodied_carbon_g(record.start_s, g) for g in ("A100", "T4"))
    assert record.embodied_g >= floor and record.requests_drained == 0
    assert label == DSD.label and done.receipt.configuration == DSD.label


@pytest.mark.parametrize("failure", ["start", "warm-up"])
def test_a_failed_switch_keeps_serving_the_current_configuration(failure: str) -> None:
    async def main() -> Any:
        first = ScriptedUpstream(STANDALONE)
        gw = Gateway(first)
        await gw.start()
        new = SlowStart(DSD, fail_start=failure == "start",
                        fail_before_first=1 if failure == "warm-up" else 0)  # fmt: skip
        with pytest.raises(UpstreamError, match="scripted"):
            await gw.switch(new)
        done, label = await one(gw, 1)
        await gw.stop()
        return gw, new, first, done, label

    gw, new, first, done, label = run(main())
    assert label == STANDALONE.label and done.finish_reason == "length"
    assert gw.switches == [] and gw.retired == [] and first.stopped == 1
    assert new.stopped == 1 and not new.ready  # whatever part of it started is stopped


def test_a_simulated_switch_runs_on_one_virtual_clock_and_pays_the_modelled_start() -> None:
    """A sim upstream with a 40 s modelled engine start at 100x, on the first one's clock:
    the gateway's clock goes on across the switch (it never jumps back), the record's start
    is 40 virtual seconds (not 0.4 wall seconds) at the GPUs' idle power, and the old
    configuration's idle time while the new one started is charged to the switch."""

    async def main() -> Any:
        first = SimUpstream(STANDALONE, time_scale=100)
        gw = Gateway(first, intensity_g_per_kwh=300.0)
        await gw.start()
        await one(gw, 0)
        t0 = gw.upstream.clock_s()
        record = await gw.switch(SimUpstream(DSD, time_scale=100, start_s=40.0,
                                             origin=first.live.origin))  # fmt: skip
        t1 = gw.upstream.clock_s()
        done, _ = await one(gw, 1)
        await gw.stop()
        return record, t0, t1, done

    record, t0, t1, done = run(main())
    assert t1 - t0 == pytest.approx(40.0, rel=0.25)
    assert record.start_s == pytest.approx(40.0, rel=0.25)
    idle_w = power_model("A100").power_w(0.0) + power_model("T4").power_w(0.0)
    assert record.energy_j >= idle_w * record.start_s
    assert record.old_idle_g > 0  # the A100 of Standalone sat idle meanwhile
    assert record.total_g == pytest.approx(record.embodied_g + record.operational_g)
    assert done.receipt.duration_s < 10  # not a clock jump of the new sim's creation
