"""The simulated upstream behind the thinnest HTTP/SSE server: the baseline of
``bench_serve_overhead.py``'s "direct over HTTP" row for the sim backend.

``/v1/completions`` with ``"stream": true`` streams the SimUpstream's chunks as OpenAI SSE
events, with nothing of the gateway (no validation beyond reading the JSON, no admission,
meter, receipt or metrics), on the same uvicorn (httptools, uvloop) the gateway runs on, so
that the difference to ``greenllm serve`` is the gateway's own work, as vLLM's server is the
baseline of the vllm rows. Prints ``listening on URL`` once up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from greenllm.config import Configuration
from greenllm.serve import GenerationRequest
from greenllm.serve.server import bind_socket
from greenllm.serve.upstreams.sim import SimUpstream

UPSTREAM = SimUpstream(Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"))


async def completions(request: Request) -> StreamingResponse:
    body = json.loads(await request.body())
    rid = uuid.uuid4().hex
    gen = GenerationRequest(rid, max_tokens=int(body.get("max_tokens", 16)),
                            prompt=body["prompt"], temperature=float(body.get("temperature", 1)))

    async def events():  # type: ignore[no-untyped-def]
        async for chunk in UPSTREAM.stream(gen):
            event = {"id": "cmpl-" + rid, "object": "text_completion", "model": body["model"],
                     "choices": [{"index": 0, "text": chunk.text,
                                  "finish_reason": chunk.finish_reason}]}
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def main() -> None:
    await UPSTREAM.start()
    app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", loop="uvloop",
                                           http="httptools"))
    host, port = sock.getsockname()[:2]
    print(f"listening on http://{host}:{port}", file=sys.stderr, flush=True)
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main())
