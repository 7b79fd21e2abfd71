"""The HTTP gateway with a real uvicorn server, real HTTP, and the `openai` client.

The upstream is scripted (tests/serve/fakes.py); tests/serve/upstreams/ run the real ones.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.extras import require

httpx = require("httpx")
openai = require("openai")
parser = require("prometheus_client.parser")
require("fastapi")
require("uvicorn")

from greenllm.serve import Gateway, GatewaySettings
from tests.serve.fakes import ScriptedUpstream, ServerThread

MODEL = "llama-2-7b"
RECEIPT_KEYS = {"energy_j", "energy_j_total", "embodied_g", "operational_g", "total_g",
                "total_g_per_token", "intensity_g_per_kwh", "intensity_source", "energy",
                "configuration", "duration_s", "idle_energy_j", "idle_g"}  # fmt: skip


@pytest.fixture(scope="module")
def server():
    up = ScriptedUpstream()
    gw = Gateway(up, GatewaySettings(max_body_bytes=64 * 1024, max_tokens_limit=64),
                 region="MISO")  # fmt: skip
    with ServerThread(gw) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def check_receipt(receipt: dict, tokens: int) -> None:
    assert set(receipt) == RECEIPT_KEYS
    assert set(receipt["energy_j"]) == {"target:A100", "draft:T4"}
    assert receipt["total_g"] == pytest.approx(receipt["embodied_g"] + receipt["operational_g"])
    assert receipt["total_g_per_token"] == pytest.approx(receipt["total_g"] / tokens)
    assert receipt["intensity_g_per_kwh"] == pytest.approx(501.0)  # MISO
    assert receipt["intensity_source"] == "MISO"
    assert receipt["energy"] == "modelled"
    assert receipt["configuration"] == "DSD A100+T4 llama-1b @16Gbps"
    assert receipt["embodied_g"] > 0


def test_completion_with_its_receipt(client):
    out = client.completions.create(model=MODEL, prompt="one two three", max_tokens=4)
    assert out.choices[0].text == "w0 w1 w2 w3 "
    assert out.choices[0].finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (3, 4)
    assert out.usage.total_tokens == 7
    check_receipt(out.usage.model_extra["greenllm"], 4)


def test_chat_completion(client):
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert out.object == "chat.completion"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == "w0 w1 w2 "
    check_receipt(out.usage.model_extra["greenllm"], 3)


def test_streaming_completion_ends_with_usage_and_receipt(client):
    chunks = list(client.completions.create(
        model=MODEL, prompt="a b", max_tokens=5, stream=True,
        stream_options={"include_usage": True},
    ))  # fmt: skip
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == 5
    check_receipt(usage.usage.model_extra["greenllm"], 5)


def test_streaming_chat_without_usage_still_carries_the_receipt(client):
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3, stream=True
    ))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "w0 w1 w2 "
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
    check_receipt(chunks[-1].model_extra["greenllm"], 3)


def test_sse_wire_format_ends_with_done(server):
    body = {"model": MODEL, "prompt": "p", "max_tokens": 2, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    for ln in lines[:-1]:
        json.loads(ln[6:])  # strict JSON


def test_models_health_ready(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_request_id_is_propagated_or_generated(server):
    body = {"model": MODEL, "prompt": "p", "max_tokens": 1}
    r = httpx.post(server.url + "/v1/completions", json=body, headers={"X-Request-Id": "abc-1"})
    assert r.headers["x-request-id"] == "abc-1" and r.json()["id"] == "cmpl-abc-1"
    r = httpx.post(server.url + "/v1/completions", json=body)
    assert len(r.headers["x-request-id"]) == 32
    bad = httpx.get(server.url + "/health", headers={"X-Request-Id": "x" * 200})
    assert len(bad.headers["x-request-id"]) == 32  # too long: replaced


def test_metrics_parse_and_count(server, client):
    client.completions.create(model=MODEL, prompt="m", max_tokens=3)
    text = httpx.get(server.url + "/metrics").text
    families = {f.name: f for f in parser.text_string_to_metric_families(text)}
    for name in ("greenllm_requests", "greenllm_time_to_first_token_seconds",
                 "greenllm_time_per_output_token_seconds", "greenllm_inflight_requests",
                 "greenllm_energy_joules", "greenllm_carbon_grams",
                 "greenllm_grid_carbon_intensity_g_per_kwh", "greenllm_slo_attainment",
                 "greenllm_spec_decode_acceptance_rate",
                 "greenllm_configuration_info"):  # fmt: skip
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}  # fmt: skip
    assert samples[("greenllm_requests_total", (("status", "ok"),))] >= 1
    assert samples[("greenllm_grid_carbon_intensity_g_per_kwh", ())] == 501.0
    assert samples[("greenllm_spec_decode_acceptance_rate", ())] == pytest.approx(0.75)
    assert samples[("greenllm_configuration_info",
                    (("label", "DSD A100+T4 llama-1b @16Gbps"),))] == 1  # fmt: skip
    assert samples[("greenllm_carbon_grams_total", (("scope", "embodied"),))] > 0
    assert samples[("greenllm_time_to_first_token_seconds_count", ())] >= 1
    assert 0 <= samples[("greenllm_slo_attainment", ())] <= 1


BAD = [
    ("malformed json", b"{", 400, None),
    ("not an object", b"[1]", 400, None),
    ("NaN", b'{"model": "llama-2-7b", "prompt": "p", "temperature": NaN}', 400, None),
    ("missing prompt", {"model": MODEL}, 400, "prompt"),
    ("missing model", {"prompt": "p"}, 400, "model"),
    ("negative max_tokens", {"model": MODEL, "prompt": "p", "max_tokens": -1}, 400,
     "max_tokens"),
    ("string max_tokens", {"model": MODEL, "prompt": "p", "max_tokens": "5"}, 400, "max_tokens"),
    ("huge max_tokens", {"model": MODEL, "prompt": "p", "max_tokens": 10**9}, 422, "max_tokens"),
    ("n = 2", {"model": MODEL, "prompt": "p", "n": 2}, 422, "n"),
    ("echo", {"model": MODEL, "prompt": "p", "echo": True}, 422, "echo"),
    ("penalty", {"model": MODEL, "prompt": "p", "presence_penalty": 1.0}, 422, "presence_penalty"),
    ("temperature 5", {"model": MODEL, "prompt": "p", "temperature": 5}, 400, "temperature"),
    ("stream 'yes'", {"model": MODEL, "prompt": "p", "stream": "yes"}, 400, "stream"),
    ("five stops", {"model": MODEL, "prompt": "p", "stop": list("abcde")}, 400, "stop"),
    ("empty prompt", {"model": MODEL, "prompt": ""}, 400, "prompt"),
    ("bad token id", {"model": MODEL, "prompt": [1, -4]}, 400, "prompt"),
    ("unknown model", {"model": "gpt-9", "prompt": "p"}, 404, "model"),
    ("deep nesting", b'{"model": "llama-2-7b", "prompt": "p", "user": ' + b"[" * 100
     + b"]" * 100 + b"}", 400, None),
    ("too large", {"model": MODEL, "prompt": "p" * 70_000}, 413, None),
]  # fmt: skip


@pytest.mark.parametrize("case, body, status, param", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_openai_error_json(server, case, body, status, param):
    kw = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(server.url + "/v1/completions", headers={"content-type": "application/json"},
                   timeout=10, **kw)  # fmt: skip
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in r.text
    if param is not None:
        assert err["param"] == param and param in err["message"]


@pytest.mark.parametrize(
    "body, param",
    [({"model": MODEL}, "messages"), ({"model": MODEL, "messages": []}, "messages"),
     ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
     ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
      "messages")],
)  # fmt: skip
def test_bad_chat_input(server, body, param):
    r = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert r.status_code in (400, 422) and r.json()["error"]["param"] == param


def test_unknown_routes_and_methods_are_json(server):
    r = httpx.get(server.url + "/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(server.url + "/v1/completions")
    assert r.status_code == 405 and "error" in r.json()


def test_api_key_is_required_when_set():
    gw = Gateway(ScriptedUpstream(), GatewaySettings(api_key="s3cret"))
    with ServerThread(gw) as srv:
        body = {"model": MODEL, "prompt": "p", "max_tokens": 1}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.post(srv.url + "/v1/completions", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        assert ok.completions.create(model=MODEL, prompt="p", max_tokens=1).choices[0].text
        assert httpx.get(srv.url + "/health").status_code == 200  # probes need no key


def test_a_failure_mid_stream_ends_with_an_error_event():
    gw = Gateway(ScriptedUpstream(fail_after_tokens=2))
    with ServerThread(gw) as srv:
        body = {"model": MODEL, "prompt": "p", "max_tokens": 5, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as r:
            events = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        last = [json.loads(e) for e in events[:-1]]
        assert last[-2]["choices"][0]["finish_reason"] == "error"
        assert last[-1]["error"]["code"] == "upstream_error"
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError):
            list(client.completions.create(model=MODEL, prompt="p", max_tokens=5, stream=True))


def test_a_stream_starts_before_its_first_token_and_reports_a_late_failure_in_it():
    """The headers go out while the upstream computes the first token (off the time to first
    token, as vLLM's server does). A failure known at once stays an HTTP status; one that
    comes later (both tries fail after 20 ms) ends the stream with an error chunk and event;
    without streaming it is still a 503."""
    body = {"model": MODEL, "prompt": "p", "max_tokens": 3, "stream": True}
    with ServerThread(Gateway(ScriptedUpstream(ttft_s=0.3))) as srv:
        t0 = time.monotonic()
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as r:
            headers_s = time.monotonic() - t0
            assert r.status_code == 200 and headers_s < 0.25, headers_s
            events = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
        assert json.loads(events[0])["choices"][0]["text"] == "w0 " and events[-1] == "[DONE]"
    with ServerThread(Gateway(ScriptedUpstream(fail_before_first=2))) as srv:
        r = httpx.post(srv.url + "/v1/completions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_error"
    up = ScriptedUpstream(fail_before_first=4, fail_delay_s=0.02)
    with ServerThread(Gateway(up)) as srv:
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            events = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]" and up.attempts == 2  # tried twice
        chunk, error = (json.loads(e) for e in events[:-1])
        assert chunk["choices"][0]["finish_reason"] == "error"
        assert error["error"]["code"] == "upstream_error"
        r = httpx.post(srv.url + "/v1/completions", json={**body, "stream": False})
        assert r.status_code == 503 and up.attempts == 4
        assert srv.gateway.inflight == 0


def test_a_client_that_disconnects_cancels_the_upstream_work():
    up = ScriptedUpstream(token_s=0.02)
    gw = Gateway(up)
    with ServerThread(gw) as srv:
        body = {"model": MODEL, "prompt": "p", "max_tokens": 500, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i > 3:
                    break
        deadline = time.monotonic() + 5
        while (up.cancelled == 0 or gw.inflight) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert up.cancelled == 1 and up.active == 0 and gw.inflight == 0
        # a non-streaming request whose client gives up is cancelled too
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/v1/completions", timeout=0.2,
                       json={"model": MODEL, "prompt": "p", "max_tokens": 500})  # fmt: skip
        deadline = time.monotonic() + 5
        while (up.cancelled < 2 or gw.inflight) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert up.cancelled == 2 and gw.inflight == 0


def test_overload_gets_429_with_retry_after():
    up = ScriptedUpstream(token_s=0.05)
    gw = Gateway(up, GatewaySettings(max_inflight=1, retry_after_s=2))
    with ServerThread(gw) as srv:
        body = {"model": MODEL, "prompt": "p", "max_tokens": 40, "stream": True}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body) as first:
            lines = first.iter_lines()  # keep it: a dropped iterator closes the response
            next(lines)
            r = httpx.post(srv.url + "/v1/completions", json={**body, "stream": False})
            assert r.status_code == 429 and r.headers["retry-after"] == "2"
            assert r.json()["error"]["type"] == "rate_limit_error"
            r = httpx.post(srv.url + "/v1/completions", json=body)
            assert r.status_code == 429
