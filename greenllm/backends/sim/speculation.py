"""Speculative decoding in the simulator: acceptance rates, the acceptance sampler, timelines.

:class:`AcceptanceSampler` draws how many tokens each speculation step emits (Leviathan et al.,
ICML 2023). :class:`SpecOneGPUTimeline` (SpecDecode) and :class:`SpecTwoGPUTimeline`
(Disg-Spec-Decode) time one iteration of K draft forwards then one target forward verifying
K + 1 tokens per sequence; the module docstring of :mod:`~greenllm.backends.sim.configs` says
how each configuration runs and what crosses the link.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from greenllm.backends.sim.instance import BusyLog
from greenllm.backends.sim.link import Link
from greenllm.backends.sim.roofline import StepModel
from greenllm.errors import ConfigError
from greenllm.speculation import ahead_hit_rate, worth_ahead

__all__ = [
    "ACCEPTANCE_RATES",
    "DEFAULT_ACCEPTANCE_RATE",
    "AcceptanceSampler",
    "SpecOneGPUTimeline",
    "SpecTwoGPUTimeline",
    "acceptance_rate_for",
    "ahead_rate",
]

logger = logging.getLogger(__name__)

# Probability a draft token is accepted, per (draft, target). Assumptions, not measurements of
# these exact pairs: Leviathan et al. (ICML 2023, Table 3) report alpha 0.62-0.82 for drafts
# 1-2 orders of magnitude smaller than the target; the larger draft gets the higher rate.
ACCEPTANCE_RATES: dict[tuple[str, str], float] = {
    ("llama-1b", "llama-2-7b"): 0.70,
    ("llama-300m", "llama-2-7b"): 0.60,
}
DEFAULT_ACCEPTANCE_RATE = 0.6
_TOKEN_ID_BYTES = 4  # int32 token ids
_VERDICT_BYTES = 8  # per sequence and step: accepted count + next token id
_PROB_BYTES = 2  # fp16 draft probabilities
_TIME_EPS_S = 1e-6  # above the rounding of epoch-based times (the live simulator's ~2.4e-7 s)


def acceptance_rate_for(
    draft: str, target: str, override: float | Mapping[tuple[str, str], float] | None = None
) -> float:
    """Acceptance rate of ``draft`` proposing for ``target``: ``override`` (a number, or a
    mapping checked first), else :data:`ACCEPTANCE_RATES`, else the default with a warning."""
    if isinstance(override, Mapping):
        if (draft, target) in override:
            return _rate(override[(draft, target)])
    elif override is not None:
        return _rate(override)
    if (draft, target) in ACCEPTANCE_RATES:
        return ACCEPTANCE_RATES[(draft, target)]
    logger.warning(
        "no acceptance rate for draft %s / target %s; using %g (pass acceptance_rate=...)",
        draft,
        target,
        DEFAULT_ACCEPTANCE_RATE,
    )
    return DEFAULT_ACCEPTANCE_RATE


def ahead_rate(acceptance_rate: float, k: int, enabled: bool) -> float | None:
    """DSD's draft-ahead hit rate, or None (off): not ``enabled``, or too few rounds fully
    accepted (alpha^K) for drafting ahead to pay (:func:`greenllm.speculation.worth_ahead`)."""
    if not enabled or not worth_ahead(acceptance_rate**k):
        return None
    return ahead_hit_rate(acceptance_rate, k)


def _rate(a: Any) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
        raise ConfigError(f"acceptance_rate = {a!r}: must be a number in [0, 1] (e.g. 0.7)")
    return float(a)


class AcceptanceSampler:
    """Tokens emitted per sequence per speculation step: ``1 + X`` with X accepted drafts.

    Each draft token is accepted with probability ``a`` independently until the first
    rejection (Leviathan et al., ICML 2023, Sec. 3.5), so ``P(X >= j) = a^j`` for ``j <= K``
    and ``E[1 + X] = (1 - a^(K+1)) / (1 - a)``. :meth:`assign` draws, with a generator seeded
    by ``seed``, one stream ``X = min(K, floor(ln U / ln a))`` (``U`` uniform on (0, 1]) and
    deals it out to the requests in index order, each taking the fewest steps that reach its
    token count; the last step emits only what is still needed.
    """

    def __init__(self, acceptance_rate: float, k: int, seed: int) -> None:
        a = acceptance_rate
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a <= 1.0:
            raise ConfigError(f"acceptance_rate = {a!r}: must be a number in [0, 1]")
        self.a, self.k = float(a), int(k)
        self._rng = np.random.default_rng([seed, 2])
        self.draws = np.zeros(0, np.int64)  # 1 + X per step, dealt out in request order
        self.cum = np.zeros(1, np.int64)  # cum[j] = draws[:j].sum()

    def expected_tokens(self) -> float:
        """E[1 + X] = (1 - a^(K+1)) / (1 - a) (Leviathan et al. 2023, Eq. 1)."""
        a, k = self.a, self.k
        return float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)

    def _draw(self, size: int) -> np.ndarray:
        if self.a <= 0.0:
            return np.ones(size, np.int64)
        if self.a >= 1.0:
            return np.full(size, self.k + 1, np.int64)
        u = 1.0 - self._rng.random(size)  # (0, 1]
        return np.minimum(np.floor(np.log(u) / math.log(self.a)), self.k).astype(np.int64) + 1

    def assign(self, tokens: np.ndarray) -> tuple[list[int], list[int]]:
        """Per request: the index of its first draw and its number of speculation steps."""
        tok = np.asarray(tokens, dtype=np.int64).tolist()
        need = sum(tok)
        draws = self._draw(int(need / self.expected_tokens() * 1.05) + 64 * (self.k + 1))
        cum = np.concatenate([[0], np.cumsum(draws)])
        while cum[-1] < need:  # rare: extend the stream
            more = self._draw(len(draws) // 4 + 64)
            draws = np.concatenate([draws, more])
            cum = np.concatenate([cum, cum[-1] + np.cumsum(more)])
        cl = cum.tolist()
        start, steps = [0] * len(tok), [0] * len(tok)
        p = 0
        for i, x in enumerate(tok):
            q = bisect.bisect_left(cl, cl[p] + x, p + 1) if x > 0 else p
            start[i], steps[i], p = p, q - p, q
        self.draws, self.cum = draws[:p], cum[: p + 1]
        return start, steps


class _DraftThenVerify:
    """K draft forwards over the batch (prompt chunks ride on the first), then the target's,
    whose LM head scores all K + 1 rows of each sequence (a prompt chunk: its last row)."""

    def __init__(self, target: StepModel, draft: StepModel, k: int) -> None:
        self.tgt, self.drf, self.k1, self.js = target.time_util, draft.time_util, k + 1, range(1, k)

    def _draft(self, b: int, ctx: int, ctok: int, cctx: int, nchunk: int) -> tuple[float, float]:
        """``(time, time x utilisation)`` of the draft's K forwards."""
        drf = self.drf
        dt, work = drf(b + ctok, ctx + cctx, b + nchunk)  # prompt chunks ride on draft step 1
        work *= dt
        if b:
            for j in self.js:
                d, u = drf(b, ctx + j * b, b)
                dt += d
                work += d * u
        return dt, work


class SpecOneGPUTimeline(_DraftThenVerify):
    """SpecDecode iteration: draft forwards then the target's verification, one GPU."""

    def __init__(self, target: StepModel, draft: StepModel, k: int, busy: BusyLog) -> None:
        super().__init__(target, draft, k)
        self.log = (busy.starts.append, busy.ends.append, busy.utils.append)

    def step(
        self, t0: float, b: int, ctx: int, ctok: int, cctx: int, nchunk: int
    ) -> tuple[float, float]:
        dt, work = self._draft(b, ctx, ctok, cctx, nchunk)
        d, u = self.tgt(b * self.k1 + ctok, ctx + cctx, b + nchunk, b * self.k1 + nchunk)
        t1 = t0 + dt + d
        log_s, log_e, log_u = self.log
        log_s(t0)
        log_e(t1)
        log_u((work + d * u) / (dt + d))
        return t1, t1


class SpecTwoGPUTimeline(_DraftThenVerify):
    """DSD iteration: verdicts to the draft GPU, K drafts, ids then probabilities back.

    ``ahead_hit_rate`` (None: off) turns on draft-ahead (:mod:`greenllm.speculation.ahead`):
    right after its drafts the draft GPU drafts the next round for every sequence (K + 1
    forwards: the bonus guess, then K), as many forwards as end before the next verdicts are
    expected (a running mean of the time from drafts sent to verdicts); a forward begun is
    finished before the verdicts are read. Each sequence is a hit
    with probability ``ahead_hit_rate`` (a binomial draw per step, seeded by ``seed``): a hit
    needs only the part of the drafting ahead not done when its verdict came (exposed), a
    miss drafts on demand as without draft-ahead. The drafting ahead is busy time on the old
    GPU, hit or not (:attr:`ahead` counts hits, misses and hidden, exposed, wasted seconds).
    Drafting is batched: the misses' on-demand drafting carries the hits' rest in the same
    forwards, so a step saves drafting time only when every sequence in it hits.
    """

    def __init__(
        self,
        target: StepModel,
        draft: StepModel,
        k: int,
        vocab: int,
        fwd: Link,
        rev: Link,
        overlap: bool,
        busy_new: BusyLog,
        busy_old: BusyLog,
        ahead_hit_rate: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(target, draft, k)
        self.ids_b, self.probs_b = k * _TOKEN_ID_BYTES, k * vocab * _PROB_BYTES
        self.fwd, self.rev, self.overlap = fwd.send, rev.send, overlap
        self.log_new = (busy_new.starts.append, busy_new.ends.append, busy_new.utils.append)
        self.log_old = (busy_old.starts.append, busy_old.ends.append, busy_old.utils.append)
        self.draft_free = 0.0
        self.hit_rate = ahead_hit_rate
        self._rng = np.random.default_rng([seed, 3])
        self._pre = (0.0, 0.0, 0.0, 0, 0)  # drafting ahead: start, s/forward, util, batch, planned
        self._verdict_s: float | None = None  # running mean: drafts sent -> next verdicts
        self.ahead = dict.fromkeys(("hits", "misses"), 0) | dict.fromkeys(
            ("hidden_s", "exposed_s", "wasted_s"), 0.0)  # fmt: skip

    def _ahead(
        self, ds: float, b: int, ctx: int, ctok: int, cctx: int, nchunk: int
    ) -> tuple[float, float, float]:
        """The drafting of a step with draft-ahead: (start, seconds, seconds x utilisation),
        after logging the part of the drafting ahead done before the verdicts came."""
        start, fwd_s, pre_u, pre_b, planned = self._pre
        self._pre = (0.0, 0.0, 0.0, 0, 0)
        pre_s = fwd_s * self.k1
        done_s = 0.0
        if pre_b:
            gap = ds - start
            self._verdict_s = gap if self._verdict_s is None else 0.8 * self._verdict_s + 0.2 * gap
        if planned:  # the forwards begun before the verdicts came (a forward begun is finished)
            begun = min(planned, max(0, math.ceil((ds - start - _TIME_EPS_S) / fwd_s)))
            log_s, log_e, log_u = self.log_old
            for i in range(begun):  # logged now that it is known (a live sim drains its logs)
                log_s(start + i * fwd_s)
                log_e(start + (i + 1) * fwd_s)
                log_u(pre_u)
            done_s = begun * fwd_s
        ds = max(ds, start + done_s)
        hits = int(self._rng.binomial(min(pre_b, b), self.hit_rate)) if pre_b else 0
        share = hits / pre_b if pre_b else 0.0
        exposed_s = (pre_s - done_s) * share  # the hits' drafting the verdicts came too early for
        a = self.ahead
        a["hits"] += hits
        a["misses"] += b - hits
        a["hidden_s"] += done_s * share
        a["exposed_s"] += exposed_s
        a["wasted_s"] += done_s * (1.0 - share)
        miss = b - hits
        dt, work = exposed_s, exposed_s * pre_u
        if miss or ctok:  # the misses drafted on demand, the hits' rest riding in the batch
            n = miss + (hits if exposed_s > 0 else 0)
            d, w = self._draft(n, ctx * n // b if b else 0, ctok, cctx, nchunk)
            dt, work = max(d, exposed_s), max(w, work)
        return ds, dt, work

    def step(
        self, t0: float, b: int, ctx: int, ctok: int, cctx: int, nchunk: int
    ) -> tuple[float, float]:
        ds = self.rev(t0, _VERDICT_BYTES * b + _TOKEN_ID_BYTES * ctok)
        if ds < self.draft_free:
            ds = self.draft_free
        log_s, log_e, log_u = self.log_old
        if self.hit_rate is None or not (b or self._pre[3]):
            dt, work = self._draft(b, ctx, ctok, cctx, nchunk)
        else:
            ds, dt, work = self._ahead(ds, b, ctx, ctok, cctx, nchunk)
        de = ds + dt
        if dt > 0:
            log_s(ds)
            log_e(de)
            log_u(work / dt)
        self.draft_free = de
        if self.hit_rate is not None and b:  # draft the next round ahead, until its verdicts
            pre_s, pre_work = self._draft(b, ctx + b * self.k1, 0, 0, 0)
            pre_u = pre_work / pre_s if pre_s > 0 else 0.0
            fwd_s = pre_s / (self.k1 - 1)  # K + 1 forwards: the bonus guess, then K
            planned = self.k1  # as many as end before the verdicts are expected
            if self._verdict_s is not None:
                planned = min(planned, int((self._verdict_s + _TIME_EPS_S) / fwd_s))
            self._pre = (de, fwd_s, pre_u, b, planned)
        d, u = self.tgt(b * self.k1 + ctok, ctx + cctx, b + nchunk, b * self.k1 + nchunk)
        if b:
            t_ids = self.fwd(de, self.ids_b * b)
            t_probs = self.fwd(de, self.probs_b * b)  # queued behind the ids
            te = (t_ids if self.overlap else t_probs) + d
            end = te if te > t_probs else t_probs
        else:  # prompt chunks only: the target need not wait for the draft
            te = end = t0 + d
        log_s, log_e, log_u = self.log_new
        log_s(te - d)
        log_e(te)
        log_u(u)
        return end, te
