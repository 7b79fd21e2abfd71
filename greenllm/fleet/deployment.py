"""From a fleet file to the programme, and from its solution to a deployment: replicas, their
GPUs and hosts, each workload's load split, as JSON and as a table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from greenllm.carbon import get_gpu
from greenllm.fleet.capacity import ReplicaModel
from greenllm.fleet.optimize import FleetProblem, FleetSolution
from greenllm.fleet.spec import FleetSpec

__all__ = ["DEFAULT_PRICE_PER_HOUR", "build_problem", "deployment", "newest_type"]

DEFAULT_PRICE_PER_HOUR: dict[str, float] = {
    "T4": 0.526,  # AWS g4dn.xlarge, 1 x T4, us-east-1 on demand
    "V100": 3.06,  # AWS p3.2xlarge, 1 x V100
    "A100": 4.10,  # AWS p4d.24xlarge / 8 (A100 40 GB)
    "A10G": 1.006,  # AWS g5.xlarge
    "L4": 0.805,  # AWS g6.xlarge
    "H100": 12.29,  # AWS p5.48xlarge / 8
}
"""US$ per GPU-hour where the fleet file gives none (docs/fleet.md: sources, 2024 prices)."""


def newest_type(spec: FleetSpec) -> str:
    """The inventory's "new" GPU type in the paper's sense: the most FP16 compute (the most
    memory on a tie), e.g. A100 over a later but smaller L4."""
    return max(spec.gpu_types, key=lambda t: (get_gpu(t).fp16_tflops, get_gpu(t).vram_gb))


def build_problem(spec: FleetSpec, models: Sequence[ReplicaModel]) -> FleetProblem:
    """The :class:`FleetProblem` of ``spec`` over ``models`` (one per workload x candidate)."""
    workloads = tuple(w.name for w in spec.workloads)
    configs = list(dict.fromkeys(m.configuration.id for m in models))
    by_id = {m.configuration.id: m.configuration for m in models}
    types = spec.gpu_types
    uses = np.zeros((len(configs), len(types)), dtype=np.int64)
    for i, cid in enumerate(configs):
        for g in by_id[cid].gpus:
            uses[i, types.index(g)] += 1
    shape = (len(workloads), len(configs))
    cap, fixed, var = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for m in models:
        w, c = workloads.index(m.workload), configs.index(m.configuration.id)
        cap[w, c], fixed[w, c], var[w, c] = m.capacity_qps, m.fixed_g_per_h, m.var_g_per_qps_h
    price = {t: math.nan for t in types}
    for entry in spec.gpus:
        given = entry.price_per_hour
        if given is None:
            given = DEFAULT_PRICE_PER_HOUR.get(get_gpu(entry.type).name)
        if given is not None and math.isnan(price[entry.type]):
            price[entry.type] = float(given)
    per_config = uses @ np.array([price[t] for t in types])
    inventory = spec.inventory()
    return FleetProblem(
        workloads=workloads, configs=tuple(by_id[c].label for c in configs), gpu_types=types,
        demand_qps=np.array([w.qps for w in spec.workloads]),
        inventory=np.array([inventory[t] for t in types]), uses=uses, capacity_qps=cap,
        fixed_g_per_h=fixed, var_g_per_qps_h=var, price_per_h=per_config,
    )  # fmt: skip


def deployment(
    spec: FleetSpec, solution: FleetSolution, models: Sequence[ReplicaModel], name: str = ""
) -> dict[str, Any]:
    """The deployment as JSON-ready data: every replica with its configuration, GPUs, hosts
    and load; each workload's split; the GPUs left off; carbon and cost per hour."""
    p = solution.problem
    by_label = {m.configuration.label: m.configuration for m in models}
    free = {(g.host, g.type): 0 for g in spec.gpus}
    for g in spec.gpus:
        free[(g.host, g.type)] += g.count
    replicas, split = [], {w: [] for w in p.workloads}  # type: ignore[var-annotated]
    for w, c in zip(*np.nonzero(solution.replicas), strict=True):
        cfg = by_label[p.configs[c]]
        n = int(solution.replicas[w, c])
        qps = float(solution.load_qps[w, c])
        split[p.workloads[w]].append({"configuration": cfg.label, "replicas": n, "qps": qps,
                                      "share": qps / float(p.demand_qps[w])})  # fmt: skip
        for _ in range(n):
            hosts = [_take(free, spec, g) for g in cfg.gpus]
            replicas.append({
                "workload": p.workloads[w], "configuration": cfg.model_dump(mode="json"),
                "label": cfg.label, "gpus": list(cfg.gpus), "hosts": hosts,
                "qps": qps / n, "capacity_qps": float(p.capacity_qps[w, c]),
            })  # fmt: skip
    off = [{"host": h, "type": t, "count": k} for (h, t), k in free.items() if k > 0]
    g_per_kwh, source = spec.intensity()
    return {
        "fleet": name, "objective": solution.objective,
        "intensity": {"g_per_kwh": g_per_kwh, "source": source},
        "carbon_g_per_h": solution.carbon_g_per_h,
        "carbon_g_per_query": solution.carbon_g_per_query(),
        "cost_per_h": None if math.isnan(solution.cost_per_h) else solution.cost_per_h,
        "gpus_used": {t: int(k) for t, k in zip(p.gpu_types, solution.gpus_used, strict=True)},
        "gpus_off": off, "replicas": replicas, "split": split,
    }  # fmt: skip


def _take(free: dict[tuple[str, str], int], spec: FleetSpec, gpu: str) -> str:
    """A host with a free ``gpu`` (the one with the most free, for balance)."""
    hosts = [(k, h) for (h, t), k in free.items() if t == gpu and k > 0]
    if not hosts:  # the solution is within the inventory, so this cannot happen
        raise AssertionError(f"no free {gpu} left")
    _, host = max(hosts)
    free[(host, gpu)] -= 1
    return host
