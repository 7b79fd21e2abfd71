"""``greenllm serve`` as a real process: the `openai` client against it, a bounded load test,
Ctrl-C/SIGTERM (exit 130, nothing left running), and one-line errors (exit 2 / exit 1)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.extras import require

httpx = require("httpx")
openai = require("openai")
parser = require("prometheus_client.parser")
require("fastapi")
require("uvicorn")

from tests.serve.fakes import ServeProcess as Serve

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def dsd_server() -> Iterator[Serve]:
    srv = Serve("--backend", "sim", "--config", "dsd:T4:llama-1b", "--time-scale", "50",
                "--region", "MISO", "--draft-ahead")  # fmt: skip
    try:
        yield srv
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def test_openai_client_gets_text_and_a_receipt(dsd_server: Serve) -> None:
    client = openai.OpenAI(base_url=dsd_server.url + "/v1", api_key="none", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["llama-2-7b"]
    out = client.completions.create(model="llama-2-7b", prompt="one two three", max_tokens=8)
    assert out.usage.completion_tokens == 8 and out.choices[0].finish_reason == "length"
    receipt = out.usage.model_extra["greenllm"]
    assert set(receipt["energy_j"]) == {"target:A100", "draft:T4"}
    assert receipt["configuration"] == "DSD A100+T4 llama-1b @16Gbps"
    assert receipt["intensity_g_per_kwh"] == pytest.approx(501.0)  # MISO
    assert receipt["total_g"] == pytest.approx(receipt["embodied_g"] + receipt["operational_g"])
    assert receipt["energy"] == "modelled" and receipt["energy_j_total"] > 0

    stream = client.chat.completions.create(
        model="llama-2-7b", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.model_extra["greenllm"]["total_g"] > 0

    metrics = httpx.get(dsd_server.url + "/metrics", timeout=10).text
    families = {f.name: f for f in parser.text_string_to_metric_families(metrics)}
    ok = [s.value for s in families["greenllm_requests"].samples
          if s.name == "greenllm_requests_total" and s.labels == {"status": "ok"}]  # fmt: skip
    assert ok and ok[0] >= 2


def test_load_500_requests_64_concurrent_none_lost(dsd_server: Serve) -> None:
    n, concurrency, max_tokens = 500, 64, 12

    async def main() -> list[dict]:
        sem = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency)
        async with httpx.AsyncClient(base_url=dsd_server.url, timeout=120, limits=limits) as c:

            async def one(i: int) -> dict:
                async with sem:
                    body = {"model": "llama-2-7b", "prompt": f"request {i} " * (1 + i % 7),
                            "max_tokens": max_tokens}  # fmt: skip
                    r = await c.post("/v1/completions", json=body,
                                     headers={"X-Request-Id": f"load-{i}"})  # fmt: skip
                    assert r.status_code == 200, r.text
                    assert r.headers["x-request-id"] == f"load-{i}"
                    return r.json()

            return await asyncio.gather(*(one(i) for i in range(n)))

    before = _ok_requests(dsd_server.url)
    bodies = asyncio.run(main())
    assert len(bodies) == n and len({b["id"] for b in bodies}) == n
    assert all(b["usage"]["completion_tokens"] == max_tokens for b in bodies)
    assert all(b["usage"]["greenllm"]["energy_j_total"] > 0 for b in bodies)
    assert _ok_requests(dsd_server.url) - before == n
    health = httpx.get(dsd_server.url + "/ready", timeout=10)
    assert health.status_code == 200


def _ok_requests(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "greenllm_requests_total" and s.labels == {"status": "ok"}:
                return s.value
    return 0.0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_ctrl_c_and_sigterm_drain_and_exit_130(sig: int) -> None:
    srv = Serve("--backend", "sim", "--config", "standalone", "--time-scale", "2")
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)

    async def inflight_then_stop() -> str:
        async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
            task = asyncio.create_task(c.post("/v1/completions", json={
                "model": "llama-2-7b", "prompt": "x", "max_tokens": 40}))  # fmt: skip
            await asyncio.sleep(0.5)  # admitted and streaming when the signal comes
            srv.proc.send_signal(sig)
            r = await task
            return r.json()["choices"][0]["finish_reason"]

    assert client.completions.create(model="llama-2-7b", prompt="a", max_tokens=2).choices
    assert asyncio.run(inflight_then_stop()) == "length"  # drained, not dropped
    code, err = srv.wait()
    assert code == 130, err
    assert "Traceback" not in err


def test_live_replanning_with_a_trace_switches_and_reports(small_store: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """`greenllm serve --replan-every` on the simulator at 100x real time, intensity from
    CISO's 2022 trace read for this year: the first configuration is the profiles' choice, the
    controller decides every 20 virtual seconds (0.2 s of wall time) and writes its audit log,
    /v1/greenllm/plan and /v1/greenllm/carbon report, and Ctrl-C still exits 130."""
    audit = tmp_path / "audit.jsonl"
    srv = Serve("--backend", "sim", "--store", str(small_store), "--workload", "sharegpt",
                "--replan-every", "20s", "--time-scale", "100", "--intensity-provider", "trace",
                "--zone", "CISO", "--trace-year", "2022", "--audit-log", str(audit))  # fmt: skip
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        for i in range(12):
            out = client.completions.create(model="llama-2-7b", prompt=f"p{i}", max_tokens=8)
            assert out.usage.completion_tokens == 8
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and audit.read_text().count('"outcome"') < 2:
            time.sleep(0.1)
        plan = httpx.get(srv.url + "/v1/greenllm/plan", timeout=10).json()
        carbon = httpx.get(srv.url + "/v1/greenllm/carbon", timeout=10).json()
    finally:
        srv.proc.send_signal(signal.SIGINT)
        code, err = srv.wait()
    assert code == 130 and "Traceback" not in err, err
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    decisions = [x for x in lines if x["type"] == "decision"]
    assert decisions[0]["reason"] == "start" and len(decisions) >= 2
    assert "trace CISO" in decisions[0]["intensity"]["source"]
    assert "2022" in decisions[0]["intensity"]["source"]
    labels = {c["configuration"] for c in decisions[0]["candidates"]}
    assert plan["configuration"] in labels and plan["application"] == "sharegpt"
    assert plan["next_check_s"] is not None and plan["intensity"]["kind"] == "average"
    assert carbon["requests"] == 12 and carbon["total_g"] > 0
    assert carbon["baseline"] == "Standalone A100" and carbon["baseline_estimate_g"] > 0


def test_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "greenllm", "serve", "--backend", "sim", "--config",
             "standalone", "--port", str(port)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--backend", "sim", "--config", "bogus"], "bogus"),
        (["--backend", "sim", "--config", "standalone", "--workload", "chat"], "--workload"),
        (["--backend", "sim", "--plan", "missing.json", "--workload", "chat"], "missing.json"),
        (["--backend", "sim", "--config", "standalone", "--port", "70000"], "--port"),
        (["--backend", "sim", "--config", "standalone", "--upstream", "target=http://x"],
         "--upstream"),
        (["--backend", "torch", "--config", "standalone", "--time-scale", "5"], "--time-scale"),
        (["--backend", "sim", "--config", "standalone", "--intensity", "nan"], "--intensity"),
        (["--backend", "gpu", "--config", "standalone"], "--backend"),
        (["--backend", "sim"], "--config"),
        (["--backend", "sim", "--replan-every", "1h"], "--store"),
        (["--backend", "sim", "--config", "standalone", "--store", "s.sqlite"],
         "--replan-every"),
        (["--backend", "sim", "--replan-every", "0s"], "--replan-every"),
        (["--backend", "sim", "--replan-every", "soon"], "--replan-every"),
        (["--backend", "sim", "--replan-every", "1h", "--store", "missing.sqlite", "--workload",
          "sharegpt"], "missing.sqlite"),
        (["--backend", "sim", "--config", "standalone", "--intensity-provider", "coal"],
         "--intensity-provider"),
        (["--backend", "sim", "--config", "dsd:T4:llama-1b", "--adaptive-k"], "--adaptive-k"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "greenllm", "serve", *args], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert lines[0].startswith("greenllm"), r.stderr


@pytest.mark.slow
def test_torch_backend_greedy_text_equals_engine_generate() -> None:
    """SmolLM2-135M on greenllm's engine behind the gateway: the `openai` client's greedy text
    equals ``Engine.generate``'s in this process, streamed and not, and under a small load."""
    require("torch")
    require("transformers")
    from greenllm.engine import Engine, SamplingParams

    prompt, n = "def fibonacci(n):", 12
    srv = Serve("--backend", "torch", "--config", "standalone", timeout_s=600)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        args = {"model": "smollm2-135m", "prompt": prompt, "max_tokens": n, "temperature": 0,
                "extra_body": {"ignore_eos": True}}  # fmt: skip
        plain = client.completions.create(**args)
        chunks = client.completions.create(**args, stream=True)
        streamed = "".join(c.choices[0].text for c in chunks if c.choices)
        receipt = plain.usage.model_extra["greenllm"]

        async def load() -> list[str]:  # a small load: 16 requests, 4 at a time, none lost
            sem = asyncio.Semaphore(4)
            body = {k: v for k, v in args.items() if k != "extra_body"} | {"ignore_eos": True}
            async with httpx.AsyncClient(base_url=srv.url, timeout=300) as c:

                async def one() -> str:
                    async with sem:
                        r = await c.post("/v1/completions", json=body)
                        assert r.status_code == 200, r.text
                        return r.json()["choices"][0]["text"]

                return await asyncio.gather(*(one() for _ in range(16)))

        texts = asyncio.run(load())
    finally:
        srv.proc.send_signal(signal.SIGINT)
        code, err = srv.wait(timeout_s=120)
    assert texts == [plain.choices[0].text] * 16  # greedy under concurrency: the same text
    with Engine("standalone", "smollm2-135m") as engine:
        want = engine.generate_batch([prompt], SamplingParams(temperature=0.0, max_tokens=n))[0]
    assert plain.choices[0].text == want.text == streamed and want.text
    assert plain.usage.completion_tokens == n
    assert set(receipt["energy_j"]) == {"target:A100"} and receipt["energy"] == "modelled"
    assert code == 130 and "Traceback" not in err, err
