"""Disg-Pref-Decode across two workers (the paper's Section 3.2): prefill on the new GPU,
decode on the old GPU, the KV cache moved over the link.

The prefill worker runs the prompt, samples the first token (so TTFT is the new GPU's) and
sends the decode worker an ``ADMIT`` (JSON: first token, sampling parameters, the sampling
generator's state, layer count) followed by the KV cache as tensors, per layer keys then
values, shapes in each message header. The decode worker rebuilds a ``DynamicCache`` and
decodes with continuous batching (:class:`~greenllm.engine.model.batching.BatchDecoder`), sending
tokens straight to the driver. Greedy output equals standalone's.

Faults: if the decode worker dies, the driver sends its unfinished requests back to the
prefill worker marked ``local``, and the prefill worker (which also stops handing off new
requests) decodes them itself: re-run, nothing lost, nothing answered twice.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from greenllm.engine.comm.transport import Kind, PeerLostError
from greenllm.engine.model.batching import BatchDecoder, kv_layers, prefill
from greenllm.engine.model.sampling import probs_from_logits, sample_row
from greenllm.engine.worker.single import SeqOutput, make_generators, parse_sampling
from greenllm.errors import missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["run_decode", "run_prefill"]

logger = logging.getLogger(__name__)


def _json_tensor(obj: dict[str, Any]) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)


def run_prefill(ctx: Any) -> None:
    """Role ``dpd_prefill``: prefill, hand the KV cache to the decode worker (or decode locally
    once that worker is gone)."""
    t = ctx.transport
    local = BatchDecoder(ctx.model, ctx.counters, max_batch=int(ctx.init.get("max_batch", 8)))
    peer_alive = True
    while not ctx.stopping.is_set():
        msg = ctx.next_request(block=not local.active)
        while msg is not None and not ctx.stopping.is_set():
            ctx.counters.requests += 1
            rid = int(msg["rid"])
            params = parse_sampling(msg["sampling"])
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
                        _hand_off(t, rid, out, gen, kv_layers(cache))
                        ctx.channel.send({"type": "handoff", "rid": rid})
                        sent = True
                    except PeerLostError as err:
                        peer_alive = False
                        ctx.event(f"decode worker lost ({err}); decoding locally from now on")
                if not sent:
                    local.admit_kv(out, kv_layers(cache), gen)
            msg = ctx.next_request(block=False)
        if ctx.stopping.is_set():
            break
        local.step(ctx)
    if peer_alive and not t.mailbox.failed:
        t.send(Kind.SHUTDOWN, 0)


def _hand_off(t: Any, rid: int, out: SeqOutput, gen: torch.Generator,
              kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:  # fmt: skip
    state = None if out.params.greedy else base64.b64encode(bytes(gen.get_state().numpy())).decode()
    info = {"first": out.tokens[0], "sampling": {
        "temperature": out.params.temperature, "top_p": out.params.top_p,
        "max_tokens": out.params.max_tokens, "seed": out.params.seed,
        "stop_token_ids": list(out.params.stop_token_ids)},
        "generator_state": state, "n_layers": len(kv)}  # fmt: skip
    t.send(Kind.ADMIT, rid, _json_tensor(info))
    for layer, (keys, values) in enumerate(kv):
        t.send(Kind.KV, rid, keys, layer, 0)
        t.send(Kind.KV, rid, values, layer, 1)


def _receive(t: Any, admit: Any, device: torch.device) -> tuple[SeqOutput, Any, list[Any]]:
    info = json.loads(bytes(admit.tensor.cpu().numpy()).decode())
    params = parse_sampling(info["sampling"])
    gen = torch.Generator()
    if info["generator_state"] is not None:  # greedy requests draw no random numbers
        state = base64.b64decode(info["generator_state"])
        gen.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    out = SeqOutput(admit.rid, params)
    out.add([int(info["first"])])
    kv = []
    for layer in range(int(info["n_layers"])):
        keys = t.recv(Kind.KV, admit.rid, f"layer {layer} keys").tensor
        values = t.recv(Kind.KV, admit.rid, f"layer {layer} values").tensor
        kv.append((keys.to(device), values.to(device)))
    return out, gen, kv


def run_decode(ctx: Any) -> None:
    """Role ``dpd_decode``: rebuild received KV caches and decode them in a continuous batch."""
    t = ctx.transport
    decoder = BatchDecoder(ctx.model, ctx.counters, max_batch=int(ctx.init.get("max_batch", 8)))
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
            out, gen, kv = _receive(t, admit, device)
            decoder.admit_kv(out, kv, gen)
            admit = t.mailbox.poll(Kind.ADMIT) if decoder.has_room else None
        decoder.step(ctx)
