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

Draft-ahead (``ahead``, beyond the paper): right after sending round r's proposal, the draft
drafts round r + 1 for the outcome "all K accepted, bonus = the draft's own most likely token",
one forward at a time while no message is waiting, and only while the request's rounds are
often fully accepted (else nearly every round drafted ahead is thrown away). A verdict with
that outcome is a hit: the drafted tokens go out at once (drafting on demand only what is
missing); any other verdict is a miss: the draft crops its cache back and drafts on demand.
Either way a proposal comes from a generator seeded by the request and the round, so seeded
outputs do not depend on timing. Verification is unchanged.

Adaptive K (``adaptive_k``): the target picks each round's K with
:class:`~greenllm.speculation.AdaptiveK` from the request's acceptance, its own forward times
(a line in the number of tokens fed) and the time it waits for the draft's ids per proposed
token; K = 0 ends speculation for the request (it decodes alone; the draft forgets it).

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
from greenllm.speculation import AdaptiveK, AheadKey, DraftAheadCache, ForwardCost, worth_ahead

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

        def choose(name: str) -> bool:
            return bool(defaults[name] if spec.get(name) is None else spec[name])

        self.overlap, self.lean, self.ahead = choose("overlap"), choose("lean"), choose("ahead")
        self.policy = AdaptiveK(k_max=self.k) if choose("adaptive_k") else None
        self.spec_off = False  # adaptive K found speculation does not pay for this request


class _Target:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.t = ctx.peer
        self.defaults = {"k": int(ctx.init.get("k", 4)),
                         "overlap": bool(ctx.init.get("overlap", True)),
                         "lean": bool(ctx.init.get("lean", False)),
                         "ahead": bool(ctx.init.get("ahead", False)),
                         "adaptive_k": bool(ctx.init.get("adaptive_k", False))}  # fmt: skip
        self.cost = ForwardCost()  # this worker's forward time by tokens fed (adaptive K)
        self.draft_wait = ForwardCost()  # time blocked on the draft's ids, by K
        self.seqs: dict[int, _TargetSeq] = {}
        self.expect: collections.deque[int] = collections.deque()  # proposals in flight, in order
        self.peer_alive = True

    def feed(self, seq: _TargetSeq, tokens: list[int], last_only: bool = False) -> torch.Tensor:
        start_s = time.perf_counter()
        with self.ctx.counters.busy():
            out = seq.lm.feed(tokens, last_only=last_only)
        self.cost.add(len(tokens), time.perf_counter() - start_s)
        return out

    def next_k(self, seq: _TargetSeq) -> int:
        """The next round's K: the request's own, or adaptive K's (0: speculation off)."""
        limit = min(seq.k, seq.out.remaining - 1)
        if seq.policy is None or limit < 1:
            return limit
        return seq.policy.next_k(self.draft_wait, self.cost, limit=limit)

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
        k_next = 0 if seq.spec_off else self.next_k(seq)
        rid = seq.out.rid
        if k_next < 1 and seq.policy is not None and seq.out.remaining > 1 and not seq.spec_off:
            seq.spec_off = True  # for good: the draft frees its state of the request
            if seq.on_draft and self.peer_alive:
                self._send(Kind.FINISH, rid)
        if not self.peer_alive or k_next < 1:
            return  # served by solo_step
        if not seq.on_draft:
            seq.on_draft = True
            info: DsdAdmit = {"prompt": seq.prompt, "first": seq.out.tokens[0], "k": k_next,
                              "lean": seq.lean, "overlap": seq.overlap, "ahead": seq.ahead,
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
        wait_start = time.perf_counter()
        ids = self.t.recv(Kind.IDS, rid, "draft token ids").tensor
        self.draft_wait.add(k, time.perf_counter() - wait_start)
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
        if seq.policy is not None:
            seq.policy.observe(k, result.n_accepted)
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
_AHEAD_STREAM = 7_919  # the per-round generator of draft-ahead: seed + round x this


class _Ahead:
    """Round r + 1 drafted for "all of round r accepted, bonus = ``guess``": ``tokens``/``rows``
    so far; the cache then holds the prefix, round r's last token, ``guess`` and all but the
    last of ``tokens``."""

    def __init__(self, base: int, gen: torch.Generator) -> None:
        self.base = base  # the cache length when round r went out (its last token not fed)
        self.sent_s = time.perf_counter()  # when round r went out
        self.gen = gen
        self.guess: int | None = None
        self.tokens: list[int] = []
        self.rows: list[torch.Tensor] = []
        self.busy_s = 0.0  # drafting time spent on it before the verdict


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
        self.ahead_on = bool(info.get("ahead", False))
        self.ahead: _Ahead | None = None  # the next round, being drafted ahead
        self.round = 0
        self.full_rounds = 0  # rounds with every proposal accepted
        self.seed = self.gen.initial_seed()

    def worth_ahead(self) -> bool:
        """Draft ahead while the request's share of fully accepted rounds (posterior mean,
        uniform prior) says it can pay (:func:`~greenllm.speculation.worth_ahead`)."""
        return self.ahead_on and worth_ahead((1 + self.full_rounds) / (2 + self.round))

    def round_generator(self, index: int) -> torch.Generator:
        """With draft-ahead, proposal ``index``'s generator, seeded by the request and the
        round: drafted ahead or on demand, a proposal is the same function of its context, so
        seeded outputs do not depend on timing."""
        return torch.Generator().manual_seed((self.seed + index * _AHEAD_STREAM) % 2**63)


def _propose(seq: _DraftSeq, k: int, gen: torch.Generator | None = None) -> None:
    proposal: list[int] = []
    rows: list[torch.Tensor] = []
    feed = seq.pending
    gen = seq.gen if gen is None else gen
    for _ in range(k):
        row = probs_from_logits(seq.lm.feed(feed)[-1], seq.params)
        proposal.append(sample_row(row, gen))
        rows.append(row)
        feed = proposal[-1:]
    seq.proposal, seq.rows = proposal, rows


def _ahead_step(seq: _DraftSeq, ahead: _Ahead) -> bool:
    """One more draft forward for the outcome drafted ahead: the bonus guess first (the draft's
    most likely token after round r's last; True: it was this step), then the next proposal's
    tokens."""
    if ahead.guess is None:
        row = probs_from_logits(seq.lm.feed(seq.proposal[-1:])[-1], seq.params)
        ahead.guess = int(torch.argmax(row))
        return True
    feed = [ahead.tokens[-1]] if ahead.tokens else [ahead.guess]
    row = probs_from_logits(seq.lm.feed(feed)[-1], seq.params)
    ahead.tokens.append(sample_row(row, ahead.gen))
    ahead.rows.append(row)
    return False


class _Draft:
    """Role ``dsd_draft``: reacts to the target's messages in order, FIFO; with draft-ahead,
    drafts the next round between messages."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx, self.t = ctx, ctx.peer
        self.seqs: dict[int, _DraftSeq] = {}
        self.cache: DraftAheadCache[_Ahead] = DraftAheadCache(max_per_request=1)
        """Rounds drafted ahead, by the outcome they were drafted for (once it is guessed)."""
        self.idle: collections.deque[int] = collections.deque()  # requests to draft ahead
        # what drafting ahead must fit in: the time from a proposal sent to its verdict, and
        # one draft forward (running means); a forward that would end after the expected
        # verdict is not begun (a verdict for another outcome would wait for it)
        self.verdict_s: float | None = None
        self.forward_s: float | None = None

    def send(self, rid: int) -> None:
        seq = self.seqs[rid]
        t = self.t
        t.send(Kind.IDS, rid, torch.tensor(seq.proposal, dtype=torch.int64))
        if seq.lean:
            token_probs = torch.stack([r[x] for r, x in zip(seq.rows, seq.proposal, strict=True)])
            t.send(Kind.TOKEN_PROBS, rid, token_probs, blocking=not seq.overlap)
        else:
            t.send(Kind.PROBS, rid, torch.stack(seq.rows), blocking=not seq.overlap)
        if seq.worth_ahead():
            seq.ahead = _Ahead(seq.lm.lm.length, seq.round_generator(seq.round + 1))
            self.idle.append(rid)

    def feedback(self, rid: int, n_acc: int, token: int, k_next: int, at_s: float) -> None:
        seq = self.seqs[rid]
        if seq.ahead is not None:
            self.verdict_s = _mean(self.verdict_s, at_s - seq.ahead.sent_s)
        k_prev = len(seq.proposal)
        seq.round += 1
        seq.full_rounds += n_acc == k_prev
        ahead, seq.ahead = seq.ahead, None
        counters = self.ctx.counters
        if ahead is not None:
            if self.cache.take(AheadKey(rid, n_acc, token)) is ahead:  # a hit
                counters.ahead_hits += 1
                counters.ahead_hidden_s += ahead.busy_s
                start_s = time.perf_counter()
                while len(ahead.tokens) < k_next:  # what the verdict came too early for
                    _ahead_step(seq, ahead)
                counters.ahead_exposed_s += time.perf_counter() - start_s
                seq.lm.lm.crop(ahead.base + 1 + k_next)  # prefix, x_K, guess, y_1..y_{k-1}
                seq.proposal, seq.rows = ahead.tokens[:k_next], ahead.rows[:k_next]
                self.send(rid)
                return
            counters.ahead_misses += 1
            counters.ahead_wasted_s += ahead.busy_s
            seq.lm.lm.crop(ahead.base)
        if n_acc == k_prev and seq.ahead_on:  # x_K alone, as drafting ahead feeds it
            seq.lm.feed(seq.proposal[-1:])
            seq.pending = [token]
        elif n_acc == k_prev:
            seq.pending = [seq.proposal[-1], token]  # x_K was never fed to the draft
        else:
            seq.lm.lm.crop(seq.lm.lm.length - (k_prev - 1 - n_acc))
            seq.pending = [token]
        _propose(seq, k_next, seq.round_generator(seq.round) if seq.ahead_on else None)
        self.send(rid)

    def draft_ahead(self) -> None:
        """Draft ahead one forward at a time, oldest request first, while no message waits."""
        while self.idle and not self.t.mailbox.waiting:
            rid = self.idle[0]
            seq = self.seqs.get(rid)
            ahead = None if seq is None else seq.ahead
            if seq is None or ahead is None or len(ahead.tokens) >= len(seq.proposal):
                self.idle.popleft()  # finished, settled, or drafted in full
                continue
            start_s = time.perf_counter()
            if (self.verdict_s is not None and self.forward_s is not None
                    and start_s + self.forward_s > ahead.sent_s + self.verdict_s):  # fmt: skip
                self.idle.popleft()  # it would not end before the verdict: leave it
                continue
            if _ahead_step(seq, ahead):
                assert ahead.guess is not None
                self.cache.put(AheadKey(rid, len(seq.proposal), ahead.guess), ahead)
            took_s = time.perf_counter() - start_s
            ahead.busy_s += took_s
            self.forward_s = _mean(self.forward_s, took_s)

    def run(self) -> None:
        ctx, t = self.ctx, self.t
        while not ctx.stopping.is_set():
            self.draft_ahead()
            try:
                msg = t.recv_any(timeout_s=3600.0)
            except PeerLostError:
                return
            if msg.kind == Kind.ADMIT:
                info = cast(DsdAdmit, decode_json_tensor(msg.tensor))
                seq = self.seqs[msg.rid] = _DraftSeq(info, ctx.model, ctx.counters)
                ctx.counters.requests += 1
                seq.lm.feed([int(x) for x in info["prompt"]], last_only=True)
                _propose(seq, int(info["k"]), seq.round_generator(0) if seq.ahead_on else None)
                self.send(msg.rid)
            elif msg.kind == Kind.FEEDBACK:
                self.feedback(msg.rid, msg.a, msg.b, msg.c, msg.received_s)
            elif msg.kind == Kind.ROW_REQUEST:
                t.send(Kind.ROW, msg.rid, self.seqs[msg.rid].rows[msg.a])
            elif msg.kind == Kind.FINISH:
                self.seqs.pop(msg.rid, None)
                self.cache.drop(msg.rid)
            elif msg.kind == Kind.SHUTDOWN:
                return


def _mean(old: float | None, new: float, weight: float = 0.2) -> float:
    """A running mean (exponentially weighted; the first value as is)."""
    return new if old is None else (1 - weight) * old + weight * new


def run_draft(ctx: WorkerContext) -> None:
    """Role ``dsd_draft``: reacts to the target's messages in order, FIFO."""
    _Draft(ctx).run()
