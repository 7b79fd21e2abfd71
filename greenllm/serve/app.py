"""The HTTP face of a :class:`~greenllm.serve.gateway.Gateway`: an OpenAI-compatible FastAPI app.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (JSON, or server-sent events
with ``"stream": true``, ending ``data: [DONE]``), ``GET /v1/models``, ``GET /v1/greenllm/plan``
(the configuration served, why, the next check), ``GET /v1/greenllm/carbon`` (totals so far and
the baseline's estimate for the same tokens), ``GET /health`` (the
process is alive), ``GET /ready`` (the engines are up and the gateway is not draining: 200,
else 503), ``GET /metrics`` (Prometheus). ``X-Request-Id`` is taken from the request (1-128
printable characters) or generated, and returned on every response.

The receipt: a response's ``usage.greenllm`` (:class:`~greenllm.serve.receipts.Receipt`). A
stream with ``stream_options.include_usage`` gets it in the final usage chunk; every stream
also gets it as the top-level ``greenllm`` field of its last chunk (the one with the
``finish_reason``), so a client that did not ask for usage still sees its carbon.

Errors are OpenAI's error JSON with a 4xx status (see :mod:`~greenllm.serve.protocol`); an
unexpected failure is a 500 with the same JSON and no traceback (the traceback goes to the log).
A stream that fails after its first token ends with a chunk whose ``finish_reason`` is
``"error"``, then an ``error`` event, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from greenllm.errors import missing_extra

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException
except ImportError as _err:  # pragma: no cover - the serve extra installs them
    raise missing_extra("fastapi", "serve") from _err

from greenllm.serve.controller import Controller
from greenllm.serve.gateway import Finished, Gateway
from greenllm.serve.protocol import APIError, parse_request
from greenllm.serve.tasks import cancel_and_wait
from greenllm.serve.upstream import TokenChunk, UpstreamError

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_DISCONNECT_POLL_S = 0.1

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]  # fmt: skip


class _RequestIdMiddleware:
    """Pure ASGI: ``scope["state"]["request_id"]`` from ``X-Request-Id`` or new; echoed back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message["headers"] = [*headers, (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(gateway: Gateway, controller: Controller | None = None) -> Any:
    """The FastAPI app serving ``gateway``; its lifespan starts and stops the gateway (and
    runs ``controller``, which re-plans the configuration, while it serves)."""
    settings = gateway.settings

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await gateway.start()
        task = None if controller is None else asyncio.create_task(controller.run())
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await gateway.stop()

    app = FastAPI(title="greenllm gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    app.add_middleware(_RequestIdMiddleware)

    def error_response(err: APIError) -> Any:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, err: APIError) -> Any:
        if err.status != 429 and err.status != 503:
            gateway.metrics.requests.labels("invalid").inc()
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, err: HTTPException) -> Any:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return error_response(APIError(err.status_code, str(err.detail), type=kind))

    @app.exception_handler(Exception)
    async def on_error(request: Request, err: Exception) -> Any:
        logger.exception("request %s failed", getattr(request.state, "request_id", "?"))
        return error_response(APIError(500, f"internal error ({type(err).__name__}); see the "
                                       "server log", type="server_error"))  # fmt: skip

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            key.strip().encode(), settings.api_key.encode()
        )
        if not ok:
            raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key")  # fmt: skip

    async def read_body(request: Request) -> bytes:
        limit = settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise APIError(413, f"request body of {length} bytes exceeds {limit} bytes",
                           code="body_too_large")  # fmt: skip
        chunks, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise APIError(413, f"request body exceeds {limit} bytes", code="body_too_large")
            chunks.append(part)
        return b"".join(chunks)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        body = {"ready": gateway.ready, "configuration": gateway.label,
                "backend": gateway.upstream.backend, "draining": gateway.draining}  # fmt: skip
        return JSONResponse(body, status_code=200 if gateway.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Any:
        data, content_type = gateway.metrics.exposition()
        return Response(data, media_type=content_type)

    @app.get("/v1/greenllm/plan")
    async def plan(request: Request) -> Any:
        check_key(request)
        if controller is not None:
            return controller.status()
        return {"configuration": gateway.label, "reason": "fixed: no controller (--replan-every)",
                "decided_at_s": None, "next_check_s": None, "intensity": None,
                "application": None,
                "switches": [r.to_dict() for r in gateway.switches]}  # fmt: skip

    @app.get("/v1/greenllm/carbon")
    async def carbon(request: Request) -> Any:
        check_key(request)
        if controller is not None:
            return controller.carbon()
        return {**gateway.totals(), "baseline": None, "baseline_estimate_g": None,
                "savings_vs_baseline": None}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        check_key(request)
        created = int(time.time())
        return {"object": "list", "data": [
            {"id": m, "object": "model", "created": created, "owned_by": "greenllm"}
            for m in gateway.models
        ]}  # fmt: skip

    async def completions(request: Request, chat: bool) -> Any:
        check_key(request)
        rid = request.state.request_id
        body = await read_body(request)
        parsed, gen = parse_request(
            body, chat=chat, request_id=rid, models=gateway.models,
            max_tokens_limit=settings.max_tokens_limit,
            default_max_tokens=settings.default_max_tokens,
        )  # fmt: skip
        gateway.admit()
        shape = _Shape(chat, ("chatcmpl-" if chat else "cmpl-") + rid, parsed.model)
        if parsed.stream:
            events = gateway.generate(gen)
            # the request starts now and the headers go out while the upstream computes the
            # first token (as vLLM's server does): they are off the time to first token. Its
            # first step (admission) has run after one loop turn: its errors are HTTP errors.
            first: asyncio.Future[TokenChunk | Finished] = asyncio.ensure_future(anext(events))
            try:
                await asyncio.sleep(0)
            except BaseException:  # cancelled here: nothing owns the request yet
                await _close_events(first, events)
                raise
            if first.done() and first.exception() is not None:
                await _close_events(first, events)
                _raise_first(first.exception())
            return _EventStream(_sse(shape, first, events, parsed.include_usage()), first, events)
        return JSONResponse(await _collect(shape, gateway.generate(gen), request))

    @app.post("/v1/completions")
    async def post_completions(request: Request) -> Any:
        return await completions(request, chat=False)

    @app.post("/v1/chat/completions")
    async def post_chat(request: Request) -> Any:
        return await completions(request, chat=True)

    return app


class _Shape:
    """Builds OpenAI response objects for one request."""

    def __init__(self, chat: bool, response_id: str, model: str) -> None:
        self.chat, self.id, self.model, self.created = chat, response_id, model, int(time.time())

    def _base(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str, finish_reason: str | None, *, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"content": text}
            if first:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {**self._base("text_completion"), "choices": [choice]}

    def usage(self, done: Finished) -> dict[str, Any]:
        return {
            "prompt_tokens": done.prompt_tokens,
            "completion_tokens": done.completion_tokens,
            "total_tokens": done.prompt_tokens + done.completion_tokens,
            "greenllm": done.receipt.to_dict(),
        }

    def usage_chunk(self, done: Finished) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(obj), "choices": [], "usage": self.usage(done)}

    def whole(self, text: str, done: Finished) -> dict[str, Any]:
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None,
                                      "finish_reason": done.finish_reason}  # fmt: skip
            return {**self._base("chat.completion"), "choices": [choice],
                    "usage": self.usage(done)}  # fmt: skip
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": done.finish_reason}
        return {**self._base("text_completion"), "choices": [choice], "usage": self.usage(done)}


def _raise_first(err: BaseException | None) -> None:
    """A stream that failed before its headers: an admission APIError as is, an upstream
    failure as 503/502 (nothing was streamed)."""
    if isinstance(err, UpstreamError):
        raise APIError(503 if err.retryable else 502, f"the upstream failed: {err}",
                       type="server_error", code="upstream_error") from None  # fmt: skip
    if err is not None and not isinstance(err, StopAsyncIteration):
        raise err


async def _close_events(
    first: asyncio.Future[Any], events: AsyncIterator[TokenChunk | Finished]
) -> None:
    """End one request's stream however its response ended (idempotent): the pending first
    step is cancelled, then the iterator closed, which cancels the upstream's work."""
    if not first.done():
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    elif not first.cancelled():
        first.exception()  # retrieved: its error was reported to the client
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


class _EventStream(StreamingResponse):
    """The SSE response of one request; it owns the request's events, so a response that
    never started its body (the client left during the headers) still ends them."""

    def __init__(self, body: AsyncIterator[bytes], first: asyncio.Future[Any],
                 events: AsyncIterator[TokenChunk | Finished]) -> None:  # fmt: skip
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(body, media_type="text/event-stream", headers=headers)
        self._first, self._events = first, events

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await _close_events(self._first, self._events)


def _data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, allow_nan=False, separators=(",", ":")).encode() + b"\n\n"


async def _sse(
    shape: _Shape,
    first: asyncio.Future[TokenChunk | Finished],
    events: AsyncIterator[TokenChunk | Finished],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Server-sent events of one request, its first event from the already running ``first``
    step; closing this generator (the client left) closes ``events``, which cancels the
    upstream work. An upstream failure, before the first token or after, ends the stream with
    an ``error`` chunk and event (the headers are out)."""
    sent_role = False

    async def items() -> AsyncIterator[TokenChunk | Finished]:
        try:
            yield await first
        except StopAsyncIteration:
            return
        async for e in events:
            yield e

    try:
        async for e in items():
            if isinstance(e, Finished):
                last = shape.chunk("", e.finish_reason, first=not sent_role)
                last["greenllm"] = e.receipt.to_dict()
                yield _data(last)
                if include_usage:
                    yield _data(shape.usage_chunk(e))
                continue
            if e.text or not sent_role:
                yield _data(shape.chunk(e.text, None, first=not sent_role))
                sent_role = True
    except UpstreamError as err:
        logger.warning("stream %s failed: %s", shape.id, err)
        yield _data(shape.chunk("", "error", first=not sent_role))
        yield _data(APIError(500, f"the upstream failed mid-stream: {err}",
                             type="server_error", code="upstream_error").body())  # fmt: skip
    except APIError as err:  # the headers are out: the client learns it from the stream
        yield _data(shape.chunk("", "error", first=not sent_role))
        yield _data(err.body())
    finally:
        await _close_events(first, events)
    yield b"data: [DONE]\n\n"


async def _collect(
    shape: _Shape, events: AsyncIterator[TokenChunk | Finished], request: Any
) -> dict[str, Any]:
    """A whole (non-streamed) response; a client that disconnects cancels the work."""

    async def consume() -> dict[str, Any]:
        parts: list[str] = []
        async for e in events:
            if isinstance(e, Finished):
                return shape.whole("".join(parts), e)
            parts.append(e.text)
        raise UpstreamError("the upstream ended without finishing the request")

    task = asyncio.ensure_future(consume())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
            if done:
                break
            if await request.is_disconnected():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise APIError(499, "client closed the request", code="client_closed")
        try:
            return task.result()
        except UpstreamError as err:
            raise APIError(503 if err.retryable else 502, f"the upstream failed: {err}",
                           type="server_error", code="upstream_error") from None  # fmt: skip
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
