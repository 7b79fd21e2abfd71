"""Disg-Spec-Decode over a REAL shaped link: the overlap of Figure 7 between two network
namespaces joined by a veth pair limited to ``--gbps`` by ``tc tbf`` (root + iproute2).

The driver and the target worker run in the "new" namespace, the draft worker in the "old"
one (:class:`greenllm.engine.comm.placement.NetnsPlacement`), so the draft's probability rows cross
the kernel's TCP stack and the rate limit. With the overlap off the target waits for the rows
before its forward, so that wait is the transfer time as seen by the target; with it on, it
waits only for what the forward did not cover. Hidden = 1 - wait(on) / wait(off). Also printed:
the rows' wire time at the nominal rate, bytes per step, tokens/s both ways; both runs must
produce the same greedy tokens.

    sudo .venv/bin/python benchmarks/bench_engine_netns.py [--gbps 1] [--tokens 48] [--prompts 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from greenllm.engine.comm.netns import ShapedLink, netns_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]


def inside(args: argparse.Namespace) -> None:
    from bench_engine_overlap import _run  # same folder

    from greenllm.engine import Engine, SamplingParams, draft_dir, smollm2_dir
    from greenllm.engine.comm.placement import NetnsPlacement
    from greenllm.workloads import humaneval_prompts

    link = ShapedLink(gbps=args.gbps, prefix=args.prefix)
    target, draft = smollm2_dir(), draft_dir(args.draft)
    prompts = humaneval_prompts()[128 : 128 + args.prompts]
    sp = SamplingParams(max_tokens=args.tokens)
    print(f"config: target=SmolLM2-135M draft={draft.name} K={args.k}, real link "
          f"{args.gbps:g} Gbit/s (veth {link.ifname('new')}<->{link.ifname('old')}, tc tbf, "
          f"namespaces {link.namespace('new')} | {link.namespace('old')}), {len(prompts)} "
          f"HumanEval prompts x {args.tokens} tokens, greedy, one request at a time; load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    with Engine("dsd", str(target), str(draft), k=args.k, timeout_s=120,
                placement=NetnsPlacement(link)) as engine:  # fmt: skip
        _run(engine, prompts[:1], SamplingParams(max_tokens=4), True)  # warm-up
        on = _run(engine, prompts, sp, overlap=True)
        off = _run(engine, prompts, sp, overlap=False)
        stats = engine.stats()
    assert on["outs"] == off["outs"], "overlap changed the output"
    probs_bytes = stats.bytes_old_to_new.get("probs", 0) / (on["steps"] + off["steps"] + 1)
    nominal_ms = 1e3 * probs_bytes * 8 / (args.gbps * 1e9)
    print(
        f"probability rows per step: {probs_bytes / 1e3:.0f} kB, {nominal_ms:.2f} ms at the "
        f"nominal rate"
    )
    print(f"{'':12}{'waited ms/step':>16}{'steps':>7}{'accept':>8}{'tok/s':>8}")
    for name, r in (("overlap on", on), ("overlap off", off)):
        print(f"{name:12}{r['wait_ms']:16.2f}{r['steps']:7d}{r['acceptance']:8.2f}"
              f"{r['tok_s']:8.2f}")  # fmt: skip
    print(
        f"hidden by the overlap: {1 - on['wait_ms'] / off['wait_ms']:.1%} of the "
        f"{off['wait_ms']:.2f} ms the target waits without it; identical outputs: True"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gbps", type=float, default=1.0)
    ap.add_argument("--draft", default="layerskip", choices=["layerskip", "distilled"])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        inside(args)
        return
    reason = netns_unavailable_reason()
    if reason is not None:
        sys.exit(f"bench_engine_netns: {reason}")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    with ShapedLink(gbps=args.gbps) as link:
        argv = [sys.executable, __file__, *sys.argv[1:], "--inside", "--prefix", link.prefix]
        code = subprocess.run(link.command("new", argv), env=env, check=False).returncode
    sys.exit(code)


if __name__ == "__main__":
    main()
