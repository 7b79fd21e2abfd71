"""Run inside a ShapedLink's new namespace by tests/engine/comm/test_netns.py: DSD and DPD engines
with NetnsPlacement on the tiny models; prints one JSON line (outputs vs target-only greedy,
the network namespace of the driver and of each worker, link bytes)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from greenllm.engine import Engine, SamplingParams, autoregressive_generate, load_model
from greenllm.engine.comm.netns import ShapedLink
from greenllm.engine.comm.placement import NetnsPlacement


def main() -> None:
    prefix, gbps, target, draft = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    link = ShapedLink(gbps=gbps, prefix=prefix)
    prompts = [[(7 * i + 3 * j) % 250 + 1 for j in range(12 + i)] for i in range(2)]
    params = SamplingParams(max_tokens=12)
    model, _ = load_model(target)
    expected = [autoregressive_generate(model, p, params).tokens for p in prompts]
    report: dict[str, object] = {"driver_netns": os.readlink("/proc/self/ns/net")}
    for mode in ("dsd", "dpd"):
        with Engine(mode, target, draft if mode == "dsd" else None, k=3, timeout_s=60,
                    placement=NetnsPlacement(link)) as engine:  # fmt: skip
            outs = [asyncio.run(engine.generate(p, params)) for p in prompts]
            stats = engine.stats()
            report[mode] = {
                "equal": [list(o.tokens) for o in outs] == expected,
                "worker_netns": {w["side"]: os.readlink(f"/proc/{w['pid']}/ns/net")
                                 for w in engine.workers},
                "bytes_old_to_new": sum(stats.bytes_old_to_new.values()),
                "bytes_new_to_old": sum(stats.bytes_new_to_old.values()),
            }  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
