"""The driver: :class:`Engine` runs Standalone, SpecDecode, Disg-Spec-Decode or
Disg-Pref-Decode with workers in separate processes (or Ray actors) and serves requests
through an async API.

::

    with Engine("dsd", target="smollm2-135m", draft="smollm2-135m-draft", k=4) as engine:
        out = asyncio.run(engine.generate("def add(a, b):", SamplingParams(max_tokens=32)))
        print(out.text, out.ttft_s, engine.stats().bytes_old_to_new)

Workers: ``standalone`` and ``spec_decode`` use one worker on the new GPU (``device_new``);
``dsd`` adds a draft worker and ``dpd`` a decode worker on the old GPU (``device_old``). The
driver talks to workers with JSON over TCP (:mod:`~greenllm.engine.comm.control`); workers talk to
each other over ``torch.distributed`` (:mod:`~greenllm.engine.comm.transport`). The driver watches
its workers: when the old-GPU worker dies, DSD requests finish on the target alone and DPD
requests handed to the decode worker are re-run on the prefill worker; none is lost or
answered twice. :meth:`close` (also at exit and on garbage collection) stops every worker.

Streaming and cancellation: :meth:`stream` yields :class:`TokenEvent` items as the workers
emit tokens. Closing the stream early (``aclose()``, ``break`` out of ``async for`` then
closing, or cancelling the consuming task), a ``timeout_s`` or a cancelled :meth:`generate`
aborts the request: every worker holding it drops it at its next step (see
:class:`~greenllm.engine.comm.messages.AbortMsg`). A stream never repeats a token: after a
DPD re-run it resumes where it was if the re-run reproduces the streamed tokens (greedy or
seeded sampling, checked token by token), else it fails with WorkerError.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from greenllm.engine.comm.link import LinkEmulation
from greenllm.engine.driver.modes import DRAFT_MODES, MODES
from greenllm.engine.driver.outputs import RequestOutput, TokenEvent
from greenllm.engine.driver.supervisor import WorkerInfo, WorkerSettings, WorkerSupervisor
from greenllm.engine.stats import EngineStats
from greenllm.errors import ConfigError, WorkerError

__all__ = ["Engine", "load_tokenizer"]

logger = logging.getLogger(__name__)


def load_tokenizer(model: str) -> Any:
    """The tokenizer saved with ``model`` (folder or alias), or None if it has none."""
    from transformers import AutoTokenizer

    from greenllm.engine.model.resolve import resolve_model_dir

    folder = resolve_model_dir(model)
    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(folder)


class Engine:
    """A disaggregated serving engine; see the module docstring.

    mode: "standalone", "spec_decode", "dsd" or "dpd". target / draft: local model folders or
    aliases of :func:`greenllm.engine.model.resolve.resolve_model_dir` (draft for
    spec_decode/dsd). k: draft tokens per step. overlap: DSD sends probabilities behind the
    target forward. lean: DSD sends draft-token probabilities only (full row on rejection).
    ahead: DSD drafts the next round while the target verifies (draft-ahead,
    :mod:`greenllm.speculation.ahead`). adaptive_k: DSD picks K per request from its running
    acceptance and the measured costs, 0 (plain decoding) when speculation cannot pay.
    link: emulated link between the two workers. placement: "local" processes, "ray" actors
    (``ray_resources={"new": {"gpu_type:A100": 1}, "old": {"gpu_type:T4": 1}}``) or a placement
    object, e.g. :class:`~greenllm.engine.comm.placement.NetnsPlacement` (a real shaped link).
    timeout_s: every worker-to-worker receive; rendezvous_timeout_s: workers joining.
    threads: torch threads per worker (default: CPU count / number of workers).
    """

    def __init__(
        self,
        mode: str = "standalone",
        target: str = "smollm2-135m",
        draft: str | None = None,
        *,
        k: int = 4,
        device_new: str = "cpu",
        device_old: str = "cpu",
        overlap: bool = True,
        lean: bool = False,
        ahead: bool = False,
        adaptive_k: bool = False,
        link: LinkEmulation | None = None,
        placement: Any = "local",
        ray_resources: dict[str, dict[str, float]] | None = None,
        timeout_s: float = 60.0,
        rendezvous_timeout_s: float = 30.0,
        start_timeout_s: float = 300.0,
        dtype: str = "float32",
        threads: int | None = None,
        max_batch: int = 8,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}: use one of {sorted(MODES)}")
        if mode in DRAFT_MODES and draft is None:
            raise ConfigError(f"mode={mode!r} needs a draft model: pass draft=<folder or alias>")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r}: the number of speculative tokens must be an integer >= 1")
        if isinstance(placement, str) and placement not in ("local", "ray"):
            raise ConfigError(f"placement={placement!r}: use 'local', 'ray' or a placement object")
        self.mode, self.target, self.draft, self.k = mode, str(target), draft, k
        self.devices = {"new": device_new, "old": device_old}
        self.overlap, self.lean, self.link = overlap, lean, link
        self.ahead, self.adaptive_k = bool(ahead), bool(adaptive_k)
        self.placement, self.ray_resources = placement, ray_resources
        self.timeout_s, self.rendezvous_timeout_s = timeout_s, rendezvous_timeout_s
        self.start_timeout_s, self.dtype, self.max_batch = start_timeout_s, dtype, max_batch
        self.threads = threads
        self.tokenizer: Any = None
        self._supervisor = WorkerSupervisor(mode, placement, ray_resources, start_timeout_s)
        weakref.finalize(self, self._supervisor.close)  # at exit or garbage collection
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Engine:
        """Launch the workers and wait until they are ready (WorkerError if one fails)."""
        if self._started:
            return self
        self._started = True
        try:
            self.tokenizer = load_tokenizer(self.target)
            settings = WorkerSettings(
                target=self.target, draft=self.draft, devices=dict(self.devices),
                dtype=self.dtype, k=self.k, overlap=self.overlap, lean=self.lean,
                ahead=self.ahead, adaptive_k=self.adaptive_k, link=self.link,
                timeout_s=self.timeout_s, rendezvous_timeout_s=self.rendezvous_timeout_s,
                threads=self.threads, max_batch=self.max_batch,
            )  # fmt: skip
            self._supervisor.start(settings, _decoder(self.tokenizer))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every worker (shutdown, then kill after 5 s). Idempotent."""
        self._supervisor.close()

    @property
    def events(self) -> list[str]:
        """What the driver saw happen to its workers (exits), and events workers reported."""
        return self._supervisor.events

    @property
    def workers(self) -> list[WorkerInfo]:
        """Per worker: index, side, role, pid, resources granted (Ray), alive."""
        return self._supervisor.workers()

    def in_flight(self) -> dict[int, int]:
        """Requests not finished yet: request id -> tokens received so far."""
        return self._supervisor.in_flight()

    def worker_pid(self, side: str) -> int | None:
        """OS pid of the worker on ``side`` ("new" or "old"), None if absent."""
        return self._supervisor.worker_pid(side)

    # -- requests ------------------------------------------------------------------------
    def _encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ConfigError(
                    f"prompt is text but model {self.target!r} has no tokenizer; pass token ids"
                )
            return list(self.tokenizer(prompt)["input_ids"])
        ids = [int(t) for t in prompt]
        if not ids:
            raise ConfigError("prompt is empty: pass a non-empty string or list of token ids")
        return ids

    async def generate(
        self,
        prompt: str | Sequence[int],
        sampling: Any = None,
        *,
        timeout_s: float | None = None,
        k: int | None = None,
        overlap: bool | None = None,
        lean: bool | None = None,
        ahead: bool | None = None,
        adaptive_k: bool | None = None,
    ) -> RequestOutput:
        """Serve one request; concurrent calls are batched / pipelined by the workers.

        ``k``, ``overlap``, ``lean``, ``ahead`` and ``adaptive_k`` override the engine's DSD
        settings for this request.
        """
        spec = {"k": k, "overlap": overlap, "lean": lean, "ahead": ahead, "adaptive_k": adaptive_k}
        pending = self._submit(prompt, sampling, spec, stream=False)
        assert pending.future is not None
        try:
            async with asyncio.timeout(timeout_s):
                return await pending.future
        except TimeoutError as err:
            raise WorkerError(
                f"request {pending.rid} not finished within timeout_s={timeout_s}"
            ) from err
        finally:  # finished: forget it; timed out or cancelled: abort it on the workers
            self._supervisor.release(pending.rid)

    async def stream(
        self,
        prompt: str | Sequence[int],
        sampling: Any = None,
        *,
        timeout_s: float | None = None,
        k: int | None = None,
        overlap: bool | None = None,
        lean: bool | None = None,
        ahead: bool | None = None,
        adaptive_k: bool | None = None,
    ) -> AsyncGenerator[TokenEvent, None]:
        """Serve one request and yield its tokens as they reach the driver.

        Each :class:`TokenEvent` holds the tokens that arrived since the previous one (with
        their emission times); the last has ``finish_reason`` and ``output`` (the
        :class:`RequestOutput` :meth:`generate` would return) and may hold no tokens. Greedy
        tokens equal :meth:`generate`'s. Closing the iterator before the end, cancelling the
        task that consumes it, or ``timeout_s`` (then WorkerError) aborts the request on every
        worker. A DPD re-run (decode worker died) never repeats a streamed token: it resumes
        if greedy or seeded, else the stream ends with WorkerError. ``k``, ``overlap``,
        ``lean``, ``ahead`` and ``adaptive_k`` as for :meth:`generate`. Worker failures raise
        WorkerError.
        """
        spec = {"k": k, "overlap": overlap, "lean": lean, "ahead": ahead, "adaptive_k": adaptive_k}
        pending = self._submit(prompt, sampling, spec, stream=True)
        events = pending.events
        assert events is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        try:
            while True:
                wait_s = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    async with asyncio.timeout(wait_s):
                        item = await events.get()
                except TimeoutError as err:
                    raise WorkerError(
                        f"request {pending.rid} not finished within timeout_s={timeout_s}"
                    ) from err
                if isinstance(item, BaseException):
                    raise item
                error: BaseException | None = None
                while not item.last and not events.empty():  # coalesce what already arrived
                    more = events.get_nowait()
                    if isinstance(more, BaseException):
                        error = more
                        break
                    item = item.merge(more)
                yield item
                if error is not None:
                    raise error
                if item.last:
                    return
        finally:  # finished: forget it; closed early, cancelled or failed: abort it
            self._supervisor.release(pending.rid)

    def _submit(self, prompt: str | Sequence[int], sampling: Any, spec: dict[str, Any],
                stream: bool) -> Any:  # fmt: skip
        from greenllm.engine.model.sampling import SamplingParams

        if not self._started or self._supervisor.closed:
            raise WorkerError("the engine is not running: use `with Engine(...)` or start()")
        sampling = sampling or SamplingParams()
        ids = self._encode(prompt)
        return self._supervisor.submit(
            ids, sampling.to_dict(), spec,
            asyncio.get_running_loop(), stream=stream,
        )  # fmt: skip

    def generate_batch(
        self, prompts: Sequence[str | Sequence[int]], sampling: Any = None, **options: Any
    ) -> list[RequestOutput]:
        """Serve ``prompts`` concurrently and return their outputs in order (sync); ``options``
        as for :meth:`generate`."""

        async def run_all() -> list[RequestOutput]:
            jobs = (self.generate(p, sampling, **options) for p in prompts)
            return list(await asyncio.gather(*jobs))

        return asyncio.run(run_all())

    # -- stats ---------------------------------------------------------------------------
    def stats(self, timeout_s: float = 10.0) -> EngineStats:
        """Counters since start: bytes per direction and kind, busy time, draft acceptance."""
        return EngineStats.combine(self.mode, self._supervisor.collect_stats(timeout_s))


def _decoder(tokenizer: Any) -> Callable[[list[int]], str] | None:
    """Token ids -> text with ``tokenizer`` (None without one); holds no engine reference."""
    if tokenizer is None:
        return None

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    return decode
