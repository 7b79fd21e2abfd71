"""A scripted upstream and a uvicorn server thread for the gateway's tests.

``ScriptedUpstream`` streams ``max_tokens`` tokens at fixed intervals on the wall clock, and
draws ``idle_w`` per GPU plus ``active_w`` per request in flight (a ModelledSampler over a
function of time), so energy depends on the load as on a real GPU. It can fail its first
attempts (before any token) or fail mid-stream, to test the gateway's retry and error paths.
The end-to-end tests against the real upstreams are in tests/serve/upstreams/.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

from greenllm.backends import ROLES
from greenllm.config import Configuration
from greenllm.energy import ModelledSampler, PowerSampler
from greenllm.serve import (
    Device,
    Gateway,
    GenerationRequest,
    TokenChunk,
    Upstream,
    UpstreamError,
    UpstreamStats,
    bind_socket,
    create_app,
)

_REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")

DSD = Configuration(kind="dsd", new_gpu="A100", old_gpu="T4", draft_model="llama-1b",
                    link_gbps=16.0)  # fmt: skip


class ScriptedUpstream(Upstream):
    backend = "scripted"

    def __init__(
        self,
        configuration: Configuration = DSD,
        *,
        ttft_s: float = 0.004,
        token_s: float = 0.001,
        idle_w: float = 50.0,
        active_w: float = 40.0,
        fail_before_first: int = 0,
        fail_delay_s: float = 0.0,
        fail_after_tokens: int | None = None,
        hang_after_tokens: int | None = None,
    ) -> None:
        self.configuration = configuration
        self.model = configuration.target_model
        self.ttft_s, self.token_s = ttft_s, token_s
        self.idle_w, self.active_w = idle_w, active_w
        self.fail_before_first = fail_before_first
        self.fail_delay_s = fail_delay_s  # a failure before the first token comes this late
        self.fail_after_tokens = fail_after_tokens
        self.hang_after_tokens = hang_after_tokens
        self.active = 0
        self.attempts = 0
        self.cancelled = 0
        self.started = self.stopped = 0
        self._ready = False
        self._sampler: PowerSampler | None = None

    async def start(self) -> None:
        self.started += 1
        self._ready = True

    async def stop(self) -> None:
        self.stopped += 1
        self._ready = False

    fail_recoveries = 0
    """Recovery attempts that raise before one succeeds."""
    recover_calls = 0

    async def recover(self) -> None:
        self.recover_calls += 1
        if self.recover_calls <= self.fail_recoveries:
            raise UpstreamError("scripted: the engine does not come back yet")
        self._ready = True

    def crash(self) -> None:
        """The engine died: not ready until :meth:`recover`."""
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def devices(self) -> tuple[Device, ...]:
        roles = ROLES[self.configuration.kind]
        return tuple(Device(g, r) for g, r in zip(self.configuration.gpus, roles, strict=True))

    def power_w(self, elapsed_s: float) -> dict[str, float]:
        return {d.key: self.idle_w + self.active_w * self.active for d in self.devices}

    def power_sampler(self) -> PowerSampler:
        if self._sampler is None:
            self._sampler = ModelledSampler(
                self.power_w, devices=[d.key for d in self.devices], period_s=0.01
            )
        return self._sampler

    def stats(self) -> UpstreamStats:
        return UpstreamStats(spec_proposed_tokens=40, spec_accepted_tokens=30)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        self.attempts += 1
        if self.attempts <= self.fail_before_first:
            if self.fail_delay_s:
                await asyncio.sleep(self.fail_delay_s)
            raise UpstreamError("scripted failure before the first token", retryable=True)
        prompt = request.prompt if request.prompt is not None else request.messages
        n_prompt = len(prompt) if isinstance(prompt, tuple) else len(str(prompt).split())
        self.active += 1
        try:
            await asyncio.sleep(self.ttft_s)
            for i in range(request.max_tokens):
                if i and self.token_s:
                    await asyncio.sleep(self.token_s)
                if self.fail_after_tokens is not None and i == self.fail_after_tokens:
                    raise UpstreamError("scripted failure mid-stream")
                if self.hang_after_tokens is not None and i == self.hang_after_tokens:
                    await asyncio.sleep(3600)
                last = i == request.max_tokens - 1
                yield TokenChunk(
                    f"w{i} ",
                    (i,),
                    time.time(),
                    "length" if last else None,
                    n_prompt if last else None,
                    request.max_tokens if last else None,
                )
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


class ServerThread:
    """A real uvicorn server for ``gateway`` on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, gateway: Gateway) -> None:
        import uvicorn

        self.gateway = gateway
        self.sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(gateway), log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)  # fmt: skip

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


class ServeProcess:
    """``python -m greenllm serve ARGS`` on a free loopback port; ``url`` once it listens."""

    def __init__(self, *args: str, timeout_s: float = 60.0) -> None:
        # a file, not a pipe: the server never blocks on a full pipe; closed by the GC
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenllm", "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=self.log, text=True, cwd=_REPO,
            env={**os.environ, "GREENLLM_API_KEY": ""},
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            if m := LISTENING.search(self.stderr()):
                self.url = m.group(1)
                return
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"greenllm serve did not start: {self.stderr()}")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait(self, timeout_s: float = 60.0) -> tuple[int, str]:
        """The exit code and stderr once the process has ended."""
        code = self.proc.wait(timeout=timeout_s)
        return code, self.stderr()
