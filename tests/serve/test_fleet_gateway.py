"""A fleet deployment served: each workload's requests go to its replicas in proportion to the
split, each charged to its own GPUs; a replica that stops being ready drops out and its share
moves to the others, with nothing lost; an unknown workload is a 404."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from greenllm.config import Configuration
from greenllm.errors import ConfigError
from greenllm.serve import APIError, Finished, FleetGateway, GatewaySettings, GenerationRequest
from greenllm.serve.upstreams.sim import SimUpstream

STANDALONE = Configuration(kind="standalone")
DSD = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-300m")
SPEC = Configuration(kind="spec_decode", draft_model="llama-300m")


def run(coro: Any, timeout_s: float = 120.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def ask(gw: FleetGateway, i: int, model: str) -> Finished:
    request = GenerationRequest(f"r{i}", max_tokens=4, prompt="a b c", model=model)
    done = None
    async for event in gw.generate(request):
        if isinstance(event, Finished):
            done = event
    assert done is not None
    return done


def build() -> FleetGateway:
    return FleetGateway.build({
        "chat": [(SimUpstream(STANDALONE, time_scale=50), 3.0),
                 (SimUpstream(DSD, time_scale=50), 1.0)],
        "code": [(SimUpstream(SPEC, time_scale=50), 0.5)],
    }, GatewaySettings(max_inflight=1000), intensity_g_per_kwh=300.0)  # fmt: skip


def test_traffic_follows_the_split_and_each_receipt_its_replica() -> None:
    async def main() -> tuple[list[Finished], list[Finished], FleetGateway]:
        gw = build()
        await gw.start()
        assert gw.ready and gw.models == ("chat", "code")
        chat = list(await asyncio.gather(*(ask(gw, i, "chat") for i in range(200))))
        code = list(await asyncio.gather(*(ask(gw, 1000 + i, "code") for i in range(20))))
        await gw.stop()
        return chat, code, gw

    chat, code, gw = run(main())
    by = Counter(f.receipt.configuration for f in chat)
    assert by == {STANDALONE.label: 150, DSD.label: 50}  # 3:1, smooth round-robin is exact
    assert {f.receipt.configuration for f in code} == {SPEC.label}
    dsd = next(f for f in chat if f.receipt.configuration == DSD.label)
    assert set(dsd.receipt.energy_j) == {"target:A100", "draft:T4"}
    totals = gw.totals()
    assert totals["requests"] == 220
    assert totals["total_g"] == pytest.approx(sum(f.receipt.total_g for f in chat + code)
                                              + totals["switch_g"], rel=1e-6)  # fmt: skip
    text = gw.metrics.exposition()[0].decode()
    for label in (STANDALONE.label, DSD.label, SPEC.label):
        assert f'greenllm_configuration_info{{label="{label}"}} 1.0' in text


def test_a_failed_replica_share_moves_to_the_others() -> None:
    async def main() -> tuple[list[Finished], list[Finished]]:
        gw = build()
        await gw.start()
        before = list(await asyncio.gather(*(ask(gw, i, "chat") for i in range(40))))
        dsd = gw.pools["chat"][1].gateway
        await dsd.upstream.stop()  # the replica dies: not ready
        assert not dsd.ready and gw.ready
        after = list(await asyncio.gather(*(ask(gw, 100 + i, "chat") for i in range(40))))
        with pytest.raises(APIError) as err:
            await ask(gw, 999, "summaries")
        assert err.value.status == 404 and "chat, code" in str(err.value)
        await gw.pools["code"][0].gateway.upstream.stop()
        assert not gw.ready  # a workload with no replica left
        await gw.stop()
        return before, after

    before, after = run(main())
    assert {f.receipt.configuration for f in before} == {STANDALONE.label, DSD.label}
    assert {f.receipt.configuration for f in after} == {STANDALONE.label}
    assert all(f.finish_reason == "length" for f in before + after)


def test_bad_pools_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least one replica"):
        FleetGateway.build({"chat": []})
    with pytest.raises(ConfigError, match="weight"):
        FleetGateway.build({"chat": [(SimUpstream(STANDALONE), 0.0)]})
