"""Disg-Pref-Decode across two workers (the paper's Section 3.2): prefill on the new GPU,
decode on the old GPU, the KV cache moved over the link.

The prefill worker runs the prompt, samples the first token (so TTFT is the new GPU's) and
sends the decode worker an ``ADMIT`` (JSON: first token, sampling parameters, the sampling
generator's state, layer count) followed by the KV cache in chunks of whole layers (about
1 MiB: the chunk's keys stacked, then its values), shapes in each message header. The decode
worker rebuilds a ``DynamicCache`` and decodes with continuous batching
(:class:`~greenllm.engine.model.batching.BatchDecoder`), sending tokens straight to the driver.
Greedy output equals standalone's.

Aborts (the driver sends ``abort`` to both workers): the prefill worker skips an aborted
request still queued and drops one it decodes locally; the decode worker drops an aborted
request from its batch at the next step, or right after receiving its KV cache.

Faults: if the decode worker dies, the driver sends its unfinished requests back to the
prefill worker marked ``local``, and the prefill worker (which also stops handing off new
requests) decodes them itself: re-run, nothing lost, nothing answered twice.
"""

from __future__ import annotations

import base64
import logging
from typing import cast

from greenllm.engine.comm.messages import DpdAdmit
from greenllm.engine.comm.transport import (
    Kind,
    Message,
    PeerLostError,
    Transport,
    decode_json_tensor,
    encode_json_tensor,
)
from greenllm.engine.model.batching import BatchDecoder, kv_layers, prefill
from greenllm.engine.model.sampling import SamplingParams, probs_from_logits, sample_row
from greenllm.engine.worker.context import SeqOutput, WorkerContext, make_generators
from greenllm.errors import WorkerError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["KV_MESSAGE_BYTES", "receive_kv", "run_decode", "run_prefill", "send_kv"]

logger = logging.getLogger(__name__)

KVLayers = list[tuple[torch.Tensor, torch.Tensor]]  # (keys, values) per layer
#: Target size of one KV message (whole layers; at least one layer).
KV_MESSAGE_BYTES = 1 << 20


def run_prefill(ctx: WorkerContext) -> None:
    """Role ``dpd_prefill``: prefill, hand the KV cache to the decode worker (or decode locally
    once that worker is gone)."""
    t = ctx.peer
    local = BatchDecoder(ctx.model, ctx.counters, max_batch=ctx.max_batch)
    peer_alive = True
    while not ctx.stopping.is_set():
        msg = ctx.next_request(block=not local.active)
        while msg is not None and not ctx.stopping.is_set():
            ctx.counters.requests += 1
            rid = int(msg["rid"])
            params = SamplingParams.from_dict(msg["sampling"])
            gen = make_generators(params)[0]
            out = SeqOutput(rid, params)
            if msg.get("local"):
                ctx.counters.reruns += 1
            logits, cache = prefill(ctx.model, [int(x) for x in msg["prompt"]], ctx.counters)
            out.emit(ctx, [sample_row(probs_from_logits(logits, params), gen)])
            if out.done:
                ctx.finish(rid, out.reason)
            else:
                peer_alive = peer_alive and not t.mailbox.failed
                sent = False
                if peer_alive and not msg.get("local"):
                    try:
                        send_kv(t, rid, out, gen, kv_layers(cache))
                        ctx.handoff(rid)
                        sent = True
                    except PeerLostError as err:
                        peer_alive = False
                        ctx.event(f"decode worker lost ({err}); decoding locally from now on")
                if not sent:
                    local.admit_kv(out, kv_layers(cache), gen)
            msg = ctx.next_request(block=False)
        if ctx.stopping.is_set():
            break
        ctx.drop_aborted(r.out for r in local.rows)
        local.step(ctx)
    if peer_alive and not t.mailbox.failed:
        t.send(Kind.SHUTDOWN, 0)


def send_kv(t: Transport, rid: int, out: SeqOutput, gen: torch.Generator,
            kv: KVLayers) -> None:  # fmt: skip
    """Hand a request to the decode worker: ``ADMIT``, then the KV cache in chunks of whole
    layers of about :data:`KV_MESSAGE_BYTES` (keys of the chunk's layers stacked, then their
    values). Few messages: each costs the receiver a wake-up, which on a loaded host took
    longer than a small layer's wire time; not one huge one: an emulated link delivers a
    message whole, so the last one's copy is not hidden behind the wire."""
    state = None if out.params.greedy else base64.b64encode(bytes(gen.get_state().numpy())).decode()
    info: DpdAdmit = {"first": out.tokens[0], "sampling": out.params.to_dict(),
                      "generator_state": state, "n_layers": len(kv)}  # fmt: skip
    t.send(Kind.ADMIT, rid, encode_json_tensor(info))
    layer_bytes = kv[0][0].numel() * kv[0][0].element_size() if kv else 1
    per = max(1, KV_MESSAGE_BYTES // max(layer_bytes, 1))
    for first in range(0, len(kv), per):
        chunk = kv[first : first + per]
        t.send(Kind.KV, rid, torch.stack([keys for keys, _ in chunk]), first, 0)
        t.send(Kind.KV, rid, torch.stack([values for _, values in chunk]), first, 1)


def receive_kv(
    t: Transport, admit: Message, device: torch.device
) -> tuple[SeqOutput, torch.Generator, KVLayers]:
    """The request :func:`send_kv` handed over: its output so far, generator and KV cache."""
    info = cast(DpdAdmit, decode_json_tensor(admit.tensor))
    params = SamplingParams.from_dict(info["sampling"])
    gen = torch.Generator()
    if info["generator_state"] is not None:  # greedy requests draw no random numbers
        state = base64.b64decode(info["generator_state"])
        gen.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    out = SeqOutput(admit.rid, params)
    out.add([int(info["first"])])
    kv: KVLayers = []
    n_layers = int(info["n_layers"])
    while len(kv) < n_layers:
        keys = t.recv(Kind.KV, admit.rid, f"keys from layer {len(kv)}")
        values = t.recv(Kind.KV, admit.rid, f"values from layer {len(kv)}")
        if (keys.a, keys.b, values.a, values.b) != (len(kv), 0, len(kv), 1) or (
            keys.tensor.shape != values.tensor.shape
        ):
            raise WorkerError(f"KV cache of request {admit.rid}: unexpected chunk at layer "
                              f"{len(kv)} (keys {tuple(keys.tensor.shape)}, values "
                              f"{tuple(values.tensor.shape)})")  # fmt: skip
        kv.extend(zip(keys.tensor.to(device).unbind(0), values.tensor.to(device).unbind(0),
                      strict=True))  # fmt: skip
    return out, gen, kv


def run_decode(ctx: WorkerContext) -> None:
    """Role ``dpd_decode``: rebuild received KV caches and decode them in a continuous batch."""
    t = ctx.peer
    decoder = BatchDecoder(ctx.model, ctx.counters, max_batch=ctx.max_batch)
    device = next(ctx.model.parameters()).device
    while not ctx.stopping.is_set():
        try:
            if decoder.active:
                admit = t.mailbox.poll(Kind.ADMIT) or t.mailbox.poll(Kind.SHUTDOWN)
            else:
                admit = t.recv_any(timeout_s=3600.0)
        except PeerLostError:
            return
        while admit is not None:
            if admit.kind == Kind.SHUTDOWN:
                return
            ctx.counters.requests += 1
            out, gen, kv = receive_kv(t, admit, device)
            if ctx.is_aborted(out.rid):  # aborted while its KV cache was on the way
                ctx.finish(out.rid, "abort")
            else:
                decoder.admit_kv(out, kv, gen)
            admit = t.mailbox.poll(Kind.ADMIT) if decoder.has_room else None
        ctx.drop_aborted(r.out for r in decoder.rows)
        decoder.step(ctx)
