"""The OpenAI API subset the gateway serves: request validation and error bodies.

``POST /v1/completions`` and ``POST /v1/chat/completions`` bodies are parsed here (pydantic,
no FastAPI), so every bad field becomes an :class:`APIError` with the OpenAI error JSON
``{"error": {"message", "type", "param", "code"}}`` and the HTTP status to send (400 bad
request, 401 bad key, 404 unknown model, 413 body too large, 422 unsupported value, 429
overloaded, 503 not ready). Parameters the gateway does not implement (``n > 1``, ``echo``,
``logprobs``, non-zero penalties, ``best_of``, tools) are refused by name (422) rather than
silently ignored; fields OpenAI clients send that change nothing (``user``, ``metadata``) pass.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greenllm.errors import GreenLLMError
from greenllm.serve.upstream import GenerationRequest

__all__ = [
    "APIError",
    "ChatCompletionRequest",
    "CompletionRequest",
    "parse_request",
]

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
MAX_PROMPT_CHARS = 1_000_000
MAX_MESSAGES = 1024
MAX_JSON_DEPTH = 32


class APIError(GreenLLMError):
    """An error the gateway answers with OpenAI's error JSON and ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers or {}

    def body(self) -> dict[str, dict[str, Any]]:
        return {"error": {"message": self.message, "type": self.type,
                          "param": self.param, "code": self.code}}  # fmt: skip


_Int = Annotated[int, Field(strict=True)]
_Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: Annotated[bool, Field(strict=True)] = False


class _Common(BaseModel):
    """Fields shared by both endpoints (OpenAI's defaults)."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    temperature: Annotated[_Float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[_Float, Field(gt=0, le=1)] = 1.0
    n: _Int = 1
    stream: Annotated[bool, Field(strict=True)] = False
    stream_options: _StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Annotated[_Int, Field(ge=0, le=2**63 - 1)] | None = None
    presence_penalty: Annotated[_Float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[_Float, Field(ge=-2, le=2)] = 0.0
    ignore_eos: Annotated[bool, Field(strict=True)] = False  # vLLM's extension
    user: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        items = [v] if isinstance(v, str) else (v or [])
        if len(items) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in items):
            raise ValueError(f"stop sequences must have 1 to {MAX_STOP_CHARS} characters")
        return v

    def stop_tuple(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common):
    """``POST /v1/completions``: one prompt (text or token ids)."""

    prompt: Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)] | list[_Int]
    max_tokens: Annotated[_Int, Field(ge=1)] | None = 16
    echo: Annotated[bool, Field(strict=True)] = False
    logprobs: _Int | None = None
    best_of: _Int | None = None
    suffix: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] | list[dict[str, Any]] | None

    def text(self) -> str:
        if isinstance(self.content, str) or self.content is None:
            return self.content or ""
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[_Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[_Int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[_Int, Field(ge=1)] | None = None
    logprobs: Annotated[bool, Field(strict=True)] = False
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


_UNSUPPORTED: dict[str, Any] = {
    "n": 1, "echo": False, "logprobs": (None, False), "best_of": (None, 1), "suffix": None,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "tools": None,
}  # fmt: skip


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping at ``limit``."""
    stack, deepest = [(obj, 1)], 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack += [(v, d + 1) for v in node.values()]
        elif isinstance(node, list):
            stack += [(v, d + 1) for v in node]
    return deepest


def _union_tag(part: object) -> bool:
    """True for the member names pydantic puts in an error's location (``str``, ``list[int]``)."""
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("constrained-")
    )


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_request(
    body: bytes,
    *,
    chat: bool,
    request_id: str,
    models: tuple[str, ...],
    max_tokens_limit: int,
    default_max_tokens: int,
) -> tuple[CompletionRequest | ChatCompletionRequest, GenerationRequest]:
    """Validate a request body; return the parsed body and the upstream's request.

    ``models``: the served model names (another gives 404). ``max_tokens_limit``: the most
    output tokens one request may ask for (more: 422 naming ``max_tokens``).
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        msg = str(err) if isinstance(err, ValueError) else "nested too deeply"
        raise APIError(400, f"request body is not valid JSON: {msg}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object", code="invalid_json")
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise APIError(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
    cls: type[CompletionRequest | ChatCompletionRequest] = (
        ChatCompletionRequest if chat else CompletionRequest
    )
    try:
        req = cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not _union_tag(p)) or None
        missing = first["type"] == "missing"
        text = f"'{param}' is required" if missing else f"'{param}': {first['msg']}"
        raise APIError(
            400, text, param=param, code="missing" if missing else "invalid_value"
        ) from None
    given = {**(req.model_extra or {}), **{k: getattr(req, k) for k in type(req).model_fields}}
    for name, allowed in _UNSUPPORTED.items():
        if name not in given:
            continue
        value = given[name]
        ok = value in allowed if isinstance(allowed, tuple) else value == allowed
        if not ok:
            raise APIError(
                422, f"'{name}' = {value!r} is not supported by this server", param=name,
                code="unsupported_parameter",
            )  # fmt: skip
    if req.model not in models:
        raise APIError(
            404, f"model '{req.model}' does not exist; this server serves {', '.join(models)}",
            type="not_found_error", param="model", code="model_not_found",
        )  # fmt: skip
    max_tokens = (
        (req.max_completion_tokens or req.max_tokens)
        if isinstance(req, ChatCompletionRequest)
        else req.max_tokens
    )
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if max_tokens > max_tokens_limit:
        raise APIError(
            422, f"'max_tokens' = {max_tokens} exceeds this server's limit of "
            f"{max_tokens_limit} output tokens", param="max_tokens", code="invalid_value",
        )  # fmt: skip
    common = dict(
        request_id=request_id, max_tokens=max_tokens, temperature=req.temperature,
        top_p=req.top_p, seed=req.seed, stop=req.stop_tuple(), ignore_eos=req.ignore_eos,
        model=req.model,
    )  # fmt: skip
    if isinstance(req, ChatCompletionRequest):
        try:
            messages = tuple({"role": m.role, "content": m.text()} for m in req.messages)
        except ValueError as err:
            raise APIError(422, f"'messages': {err}", param="messages") from None
        return req, GenerationRequest(messages=messages, **common)  # type: ignore[arg-type]
    prompt = req.prompt
    if isinstance(prompt, list):
        if not prompt:
            raise APIError(400, "'prompt' is empty", param="prompt")
        if any(t < 0 or t >= 2**31 for t in prompt):
            raise APIError(400, "'prompt' token ids must be in [0, 2^31)", param="prompt")
        return req, GenerationRequest(prompt=tuple(prompt), **common)  # type: ignore[arg-type]
    return req, GenerationRequest(prompt=prompt, **common)  # type: ignore[arg-type]
