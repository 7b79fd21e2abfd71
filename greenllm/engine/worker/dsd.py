"""Disg-Spec-Decode across two workers (the paper's Section 3.2 and Figure 7).

The draft worker (old GPU) proposes K tokens and sends the K token ids first (a small message),
then the K draft probability rows with a non-blocking ``isend``. The target worker (new GPU)
starts its verification forward over ``[last token, K ids]`` as soon as the ids arrive and
waits for the probabilities only when the verifier needs them, so the transfer hides behind
the forward. ``overlap=False`` waits for the probabilities before the forward (for comparison).
After verification the target sends back (accepted count, correction/bonus token, next K); the
draft crops its KV cache and proposes again.

Lean mode (beyond the paper) sends the K draft-token probabilities instead of K rows; on a
rejection at position i the target asks for row i (one extra round trip) and verifies with
:func:`~greenllm.engine.model.verifier.verify_lean`: same tokens for the same random state.

Pipelining: the target leads. It admits every waiting request (prefill, first token, ``ADMIT``
to the draft) and then serves proposals in the order they were requested, so while it verifies
request A the draft is already drafting request B. The draft only reacts, in FIFO order.

Aborts: the target drops an aborted request at its next step (after taking a proposal in
flight for it off the link) and sends the draft ``FINISH``, which frees the draft's KV cache.

Faults: if the draft dies or stops answering within ``timeout_s``, the target logs the event
and finishes every request in flight on its own (plain decoding from its own KV cache), so
greedy outputs are unchanged and every request is answered once.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, cast

from greenllm.engine.comm.messages import DsdAdmit, GenerateMsg
from greenllm.engine.comm.transport import (
    Kind,
    PeerLostError,
    decode_json_tensor,
    encode_json_tensor,
)
from greenllm.engine.model.cache import CachedLM
from greenllm.engine.model.sampling import SamplingParams, probs_from_logits, sample_row
from greenllm.engine.model.verifier import verify, verify_lean
from greenllm.engine.stats import WorkerCounters
from greenllm.engine.worker.context import SeqOutput, WorkerContext, make_generators
from greenllm.errors import missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["run_draft", "run_target"]

logger = logging.getLogger(__name__)


class _Busy:
    """CachedLM.feed timed as busy time."""

    def __init__(self, lm: CachedLM, counters: WorkerCounters) -> None:
        self.lm, self.counters = lm, counters

    def feed(self, tokens: list[int], last_only: bool = False) -> torch.Tensor:
        with self.counters.busy():
            return self.lm.feed(tokens, last_only=last_only)


# -- target (new GPU) ------------------------------------------------------------------------
class _TargetSeq:
    def __init__(self, msg: GenerateMsg, model: Any, defaults: dict[str, Any]) -> None:
        self.params = SamplingParams.from_dict(msg["sampling"])
        self.out = SeqOutput(int(msg["rid"]), self.params)
        self.prompt = [int(t) for t in msg["prompt"]]
        self.gen = make_generators(self.params)[0]
        self.lm = CachedLM(model)
        self.proposed = self.accepted = 0
        self.k_step = 0
        self.on_draft = False
        spec = msg.get("spec") or {}
        self.k = int(spec.get("k") or defaults["k"])
        self.overlap = bool(defaults["overlap"] if spec.get("overlap") is None else spec["overlap"])
        self.lean = bool(defaults["lean"] if spec.get("lean") is None else spec["lean"])

    def next_k(self) -> int:
        return min(self.k, self.out.remaining - 1)


class _Target:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.t = ctx.peer
        self.defaults = {"k": int(ctx.init.get("k", 4)),
                         "overlap": bool(ctx.init.get("overlap", True)),
                         "lean": bool(ctx.init.get("lean", False))}  # fmt: skip
        self.seqs: dict[int, _TargetSeq] = {}
        self.expect: collections.deque[int] = collections.deque()  # proposals in flight, in order
        self.peer_alive = True

    def feed(self, seq: _TargetSeq, tokens: list[int], last_only: bool = False) -> torch.Tensor:
        with self.ctx.counters.busy():
            return seq.lm.feed(tokens, last_only=last_only)

    def abort(self, seq: _TargetSeq) -> None:
        """Drop an aborted request: answer ``finish`` (reason "abort") and free the draft's
        state of it (``FINISH``)."""
        seq.out.done, seq.out.reason = True, "abort"
        self.finish(seq)

    def finish(self, seq: _TargetSeq) -> None:
        self.seqs.pop(seq.out.rid, None)
        self.ctx.finish(seq.out.rid, seq.out.reason, seq.proposed, seq.accepted)
        if self.peer_alive:
            self._send(Kind.FINISH, seq.out.rid)

    def _send(self, kind: Kind, rid: int, tensor: torch.Tensor | None = None, a: int = 0,
              b: int = 0, c: int = 0) -> None:  # fmt: skip
        try:
            self.t.send(kind, rid, tensor, a, b, c)
        except PeerLostError as err:
            self._lose_peer(str(err))

    def _lose_peer(self, reason: str) -> None:
        if self.peer_alive and not self.ctx.stopping.is_set():
            self.peer_alive = False
            self.expect.clear()
            self.ctx.counters.fallback_requests += len(self.seqs)
            self.ctx.event(f"draft worker lost ({reason}); finishing {len(self.seqs)} "
                           "request(s) on the target alone")  # fmt: skip

    def admit(self, msg: GenerateMsg) -> None:
        seq = _TargetSeq(msg, self.ctx.model, self.defaults)
        self.ctx.counters.requests += 1
        logits = self.feed(seq, seq.prompt, last_only=True)[-1]
        first = sample_row(probs_from_logits(logits, seq.params), seq.gen)
        seq.out.emit(self.ctx, [first])  # the cache holds the prompt; `first` is fed later
        self.seqs[seq.out.rid] = seq
        self.after_step(seq, n_accepted=0)

    def after_step(self, seq: _TargetSeq, n_accepted: int) -> None:
        """Finish ``seq`` or ask the draft for its next proposal (or go on alone)."""
        if seq.out.done:
            self.finish(seq)
            return
        k_next = seq.next_k()
        if not self.peer_alive or k_next < 1:
            return  # served by solo_step
        rid = seq.out.rid
        if not seq.on_draft:
            seq.on_draft = True
            info: DsdAdmit = {"prompt": seq.prompt, "first": seq.out.tokens[0], "k": k_next,
                              "lean": seq.lean, "overlap": seq.overlap,
                              "sampling": seq.params.to_dict()}  # fmt: skip
            self._send(Kind.ADMIT, rid, encode_json_tensor(info))
        else:
            self._send(Kind.FEEDBACK, rid, None, n_accepted, seq.out.tokens[-1], k_next)
        seq.k_step = k_next
        if self.peer_alive:
            self.expect.append(rid)

    def solo_step(self, seq: _TargetSeq) -> None:
        """One plain target step (no draft): feed the last token, sample the next."""
        token = sample_row(probs_from_logits(self.feed(seq, [seq.out.tokens[-1]])[-1],
                                             seq.params), seq.gen)  # fmt: skip
        seq.out.emit(self.ctx, [token])
        if seq.out.done:
            self.finish(seq)

    def spec_step(self, rid: int) -> None:
        seq = self.seqs[rid]
        k = seq.k_step
        probs_kind = Kind.TOKEN_PROBS if seq.lean else Kind.PROBS
        if self.ctx.is_aborted(rid):  # take the proposal in flight off the link, then drop
            self.t.recv(Kind.IDS, rid, "draft token ids")
            self.t.recv(probs_kind, rid, "draft probabilities")
            self.abort(seq)
            return
        ids = self.t.recv(Kind.IDS, rid, "draft token ids").tensor
        proposal = [int(x) for x in ids]
        probs_msg = None
        if not seq.overlap:  # no overlap: the probabilities first, then the forward
            wait_start = time.perf_counter()
            probs_msg = self.t.recv(probs_kind, rid, "draft probabilities")
            self.ctx.counters.probs_wait_s += time.perf_counter() - wait_start
        base = seq.lm.length
        try:
            target_rows = probs_from_logits(self.feed(seq, [seq.out.tokens[-1], *proposal]),
                                            seq.params)  # fmt: skip
            if probs_msg is None:
                wait_start = time.perf_counter()
                probs_msg = self.t.recv(probs_kind, rid, "draft probabilities")
                self.ctx.counters.probs_wait_s += time.perf_counter() - wait_start
            if seq.lean:
                result = verify_lean(proposal, probs_msg.tensor, target_rows,
                                     lambda i: self.fetch_row(rid, i), seq.gen)  # fmt: skip
            else:
                result = verify(proposal, probs_msg.tensor, target_rows, seq.gen)
        except PeerLostError:
            seq.lm.crop(base)  # back to "everything but the last emitted token"
            raise
        seq.lm.crop(base + 1 + result.n_accepted)
        seq.proposed += k
        seq.accepted += result.n_accepted
        counters = self.ctx.counters
        counters.proposed += k
        counters.accepted += result.n_accepted
        counters.steps += 1
        seq.out.emit(self.ctx, result.tokens)
        self.after_step(seq, result.n_accepted)

    def fetch_row(self, rid: int, i: int) -> torch.Tensor:
        self.ctx.counters.row_fetches += 1
        self.t.send(Kind.ROW_REQUEST, rid, None, i)
        return self.t.recv(Kind.ROW, rid, f"draft row {i}").tensor

    def run(self) -> None:
        ctx = self.ctx
        while not ctx.stopping.is_set():
            waiting_on_draft = bool(self.expect)
            solo = [s for s in self.seqs.values() if s.out.rid not in self.expect]
            msg = ctx.next_request(block=not (waiting_on_draft or solo))
            while msg is not None:
                self.admit(msg)
                msg = ctx.next_request(block=False)
            if ctx.stopping.is_set():
                break
            for seq in [s for s in self.seqs.values()
                        if s.out.rid not in self.expect and ctx.is_aborted(s.out.rid)]:  # fmt: skip
                self.abort(seq)  # no proposal in flight: drop now (else in spec_step)
            for seq in [s for s in self.seqs.values() if s.out.rid not in self.expect]:
                self.solo_step(seq)  # no draft for it (peer lost, or only one token left)
            if self.expect and self.peer_alive:
                rid = self.expect.popleft()
                try:
                    self.spec_step(rid)
                except PeerLostError as err:
                    self._lose_peer(str(err))
        if self.peer_alive:
            self._send(Kind.SHUTDOWN, 0)


def run_target(ctx: WorkerContext) -> None:
    """Role ``dsd_target``: the leader on the new GPU."""
    _Target(ctx).run()


# -- draft (old GPU) -------------------------------------------------------------------------
class _DraftSeq:
    def __init__(self, info: DsdAdmit, model: Any, counters: WorkerCounters) -> None:
        self.params = SamplingParams.from_dict(info["sampling"])
        self.gen = make_generators(self.params)[1]
        self.lm = _Busy(CachedLM(model), counters)
        self.pending: list[int] = [int(info["first"])]
        self.proposal: list[int] = []
        self.rows: list[torch.Tensor] = []
        self.lean = bool(info.get("lean", False))
        self.overlap = bool(info.get("overlap", True))


def _propose(seq: _DraftSeq, k: int) -> None:
    proposal: list[int] = []
    rows: list[torch.Tensor] = []
    feed = seq.pending
    for _ in range(k):
        row = probs_from_logits(seq.lm.feed(feed)[-1], seq.params)
        proposal.append(sample_row(row, seq.gen))
        rows.append(row)
        feed = proposal[-1:]
    seq.proposal, seq.rows = proposal, rows


def run_draft(ctx: WorkerContext) -> None:
    """Role ``dsd_draft``: reacts to the target's messages in order, FIFO."""
    t = ctx.peer
    seqs: dict[int, _DraftSeq] = {}

    def propose_and_send(rid: int, k: int) -> None:
        seq = seqs[rid]
        _propose(seq, k)
        t.send(Kind.IDS, rid, torch.tensor(seq.proposal, dtype=torch.int64))
        if seq.lean:
            token_probs = torch.stack([r[x] for r, x in zip(seq.rows, seq.proposal, strict=True)])
            t.send(Kind.TOKEN_PROBS, rid, token_probs, blocking=not seq.overlap)
        else:
            t.send(Kind.PROBS, rid, torch.stack(seq.rows), blocking=not seq.overlap)

    while not ctx.stopping.is_set():
        try:
            msg = t.recv_any(timeout_s=3600.0)
        except PeerLostError:
            return
        if msg.kind == Kind.ADMIT:
            info = cast(DsdAdmit, decode_json_tensor(msg.tensor))
            seq = seqs[msg.rid] = _DraftSeq(info, ctx.model, ctx.counters)
            ctx.counters.requests += 1
            seq.lm.feed([int(x) for x in info["prompt"]], last_only=True)
            propose_and_send(msg.rid, int(info["k"]))
        elif msg.kind == Kind.FEEDBACK:
            seq = seqs[msg.rid]
            n_acc, token, k_next = msg.a, msg.b, msg.c
            k_prev = len(seq.proposal)
            if n_acc == k_prev:
                seq.pending = [seq.proposal[-1], token]  # x_K was never fed to the draft
            else:
                seq.lm.lm.crop(seq.lm.lm.length - (k_prev - 1 - n_acc))
                seq.pending = [token]
            propose_and_send(msg.rid, k_next)
        elif msg.kind == Kind.ROW_REQUEST:
            t.send(Kind.ROW, msg.rid, seqs[msg.rid].rows[msg.a])
        elif msg.kind == Kind.FINISH:
            seqs.pop(msg.rid, None)
        elif msg.kind == Kind.SHUTDOWN:
            return
