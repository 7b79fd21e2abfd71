"""What one replica of each candidate configuration can carry for each workload, and its carbon.

Candidates: every kind over the inventory's GPU types (Standalone and SpecDecode on each type
with each draft; DPD and DSD on every ordered pair of distinct types, over the link between
their hosts), less those the simulator cannot place (a target that does not fit its GPU).

For each (workload, candidate) the simulator profiles the workload's requests (its sampled
sizes, its SLO; Poisson arrivals for ``duration_s``, so that queues can build at every load)
at ``LEVELS`` x its QPS into a profile store (cells measured there with the same duration and
seed are reused;
collaborative filtering completes any it could not measure), and:

* **capacity** ``Q``: the highest of those levels up to which every level meets the workload's
  attainment target (0 when even the lowest misses it); a replica never needs more than the
  workload's whole load;
* **carbon per hour at load q**: ``F + V q``, with the average power of the replica's GPUs fitted
  linearly in ``q`` over the levels it carries (``P(q) = P0 + k q``, never below the power
  model's idle draw), so ``F = P0 x 1 h x PUE x alpha`` (Eq. 2) ``+`` the GPUs' embodied carbon
  per hour (Eq. 1, at their lifetimes), and ``V = k x 1 h x PUE x alpha``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenllm.carbon import embodied_carbon_g, get_gpu
from greenllm.config import SLO, Configuration, RequestSize
from greenllm.errors import ConfigError, InfeasibleError
from greenllm.fleet.spec import FleetSpec, WorkloadEntry
from greenllm.units import J_PER_KWH
from greenllm.workloads import Application, get_application, register_application

__all__ = ["LEVELS", "ReplicaModel", "candidate_configurations", "embodied_g_per_h",
           "replica_models", "workload_application"]  # fmt: skip

logger = logging.getLogger(__name__)

LEVELS: tuple[float, ...] = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
"""Fractions of a workload's QPS at which each candidate is profiled."""


@dataclass(frozen=True)
class ReplicaModel:
    """One replica of ``configuration`` serving ``workload``."""

    workload: str
    configuration: Configuration
    capacity_qps: float
    fixed_g_per_h: float
    var_g_per_qps_h: float
    idle_w: float
    watts_per_qps: float
    source: str
    """``simulated`` (every level by the simulator), ``filled`` (completed by collaborative
    filtering) or ``measured`` (your own records, :func:`replica_models`' ``measured``)."""


def workload_application(w: WorkloadEntry) -> Application:
    """The application a workload's requests and SLO are profiled as: its Table 2 application
    when it keeps that SLO, else one registered under the workload's name."""
    if w.application is not None:
        base = get_application(w.application)
        slo = SLO(ttft_s=w.ttft_s or base.slo.ttft_s, tpot_s=w.tpot_s or base.slo.tpot_s)
        if slo == base.slo:
            return base
        sizes = (base.p25, base.p50, base.p75)
    else:
        assert w.sizes is not None and w.ttft_s is not None and w.tpot_s is not None
        slo = SLO(ttft_s=w.ttft_s, tpot_s=w.tpot_s)
        sizes = tuple(RequestSize(input_tokens=w.sizes[k][0], output_tokens=w.sizes[k][1])
                      for k in ("p25", "p50", "p75"))  # type: ignore[assignment]
    app = Application(name=w.name.lower(), dataset=w.name, task="fleet workload", slo=slo,
                      p25=sizes[0], p50=sizes[1], p75=sizes[2], qps_grid=(w.qps,))  # fmt: skip
    register_application(app, replace=True)
    return app


def candidate_configurations(spec: FleetSpec) -> list[Configuration]:
    """Every kind over the inventory's GPU types (see the module docstring)."""
    from greenllm.backends.sim import SimOptions
    from greenllm.backends.sim.options import plan

    types, target, drafts = spec.gpu_types, spec.models.target, spec.models.drafts
    out: list[Configuration] = []
    for new in types:
        out.append(Configuration(kind="standalone", new_gpu=new, target_model=target))
        out += [Configuration(kind="spec_decode", new_gpu=new, target_model=target,
                              draft_model=d) for d in drafts]  # fmt: skip
        for old in types:
            if old == new:
                continue
            link = spec.link_gbps(new, old)
            out.append(Configuration(kind="dpd", new_gpu=new, old_gpu=old, target_model=target,
                                     link_gbps=link))  # fmt: skip
            out += [Configuration(kind="dsd", new_gpu=new, old_gpu=old, target_model=target,
                                  draft_model=d, link_gbps=link) for d in drafts]  # fmt: skip
    placeable = []
    for c in out:
        try:
            plan(c, SimOptions())
        except (ConfigError, InfeasibleError) as err:
            logger.info("fleet: %s left out: %s", c.label, err)
            continue
        placeable.append(c)
    if not placeable:
        raise ConfigError(f"no configuration of {target} fits the inventory's GPUs "
                          f"({', '.join(types)})")  # fmt: skip
    return placeable


def replica_models(
    spec: FleetSpec,
    store_path: str | Path,
    *,
    configs: list[Configuration] | None = None,
    duration_s: float = 60.0,
    seed: int = 0,
    progress: bool = False,
    measured: str | Path | None = None,
    measured_backend: str = "vllm",
) -> list[ReplicaModel]:
    """A :class:`ReplicaModel` per (workload, candidate) (see the module docstring); the
    simulator's profiles are kept in ``store_path`` and reused by the next call.

    ``measured``: a store of your own measurements (``greenllm import vllm-bench``): where it
    holds records of ``measured_backend`` for a workload's application and a candidate, at
    loads up to the workload's, the replica model comes from them (``source="measured"``)
    instead of the simulator."""
    from greenllm.profiler.store import ProfileStore
    from greenllm.profiler.sweep import SweepGrid, run_sweep
    from greenllm.scheduler import Planner, matrices_from_store

    configs = configs if configs is not None else candidate_configurations(spec)
    alpha, _ = spec.intensity()
    apps = {w.name: workload_application(w) for w in spec.workloads}
    qps = {apps[w.name].name: [round(w.qps * f, 6) for f in LEVELS] for w in spec.workloads}
    grid = SweepGrid.build(configs, sorted(qps), ["sampled"], qps)
    run_id = f"fleet-{duration_s:g}s-seed{seed}"  # another duration or seed measures again
    with ProfileStore(store_path) as store:
        run_sweep(grid, store, backend="sim", duration_s=duration_s, seed=seed, run_id=run_id,
                  progress=progress)  # fmt: skip
        m = matrices_from_store(store, backend="sim", run_id=run_id)
    ids = [c.id for c in m.configs]
    filled = Planner().complete(m)
    out = []
    for w in spec.workloads:
        app = apps[w.name]
        rows = sorted((i for i, k in enumerate(m.rows) if k.application == app.name
                       and any(abs(k.qps - q) < 1e-9 for q in qps[app.name])),
                      key=lambda i: m.rows[i].qps)  # fmt: skip
        levels = np.array([m.rows[i].qps for i in rows])
        for c in configs:
            j = ids.index(c.id)
            source = "simulated" if m.observed[rows, j].all() else "filled"
            out.append(_model(spec, w, c, levels, filled["attainment"][rows, j],
                              _power_w(m, filled, rows, j), alpha, source))  # fmt: skip
    if measured is not None:
        out = _with_measurements(out, spec, apps, measured, measured_backend, alpha)
    return out


def _with_measurements(models: list[ReplicaModel], spec: FleetSpec,
                       apps: dict[str, Application], store_path: str | Path, backend: str,
                       alpha: float) -> list[ReplicaModel]:  # fmt: skip
    """``models`` with those the store measured replaced (see :func:`replica_models`)."""
    from greenllm.profiler.store import ProfileStore
    from greenllm.scheduler import matrices_from_store

    if not Path(store_path).is_file():
        raise ConfigError(f"measurements store {str(store_path)!r}: no such file")
    with ProfileStore(store_path) as store:
        m = matrices_from_store(store, backend=backend)
    ids = [c.id for c in m.configs]
    demand = {w.name: w for w in spec.workloads}
    out = []
    for model in models:
        w, c = demand[model.workload], model.configuration
        rows = sorted((i for i, k in enumerate(m.rows) if k.application == apps[w.name].name
                       and k.qps <= w.qps * (1 + 1e-9)), key=lambda i: m.rows[i].qps)  # fmt: skip
        j = ids.index(c.id) if c.id in ids else None
        rows = [i for i in rows if j is not None and m.observed[i, j]]
        if j is None or not rows:
            out.append(model)
            continue
        levels = np.array([m.rows[i].qps for i in rows])
        power = np.array([sum(e / t for e, t in zip(m.energy_j[i, j], m.seconds[i, j],
                                                     strict=True) if t > 0) for i in rows])
        out.append(_model(spec, w, c, levels, m.attainment[rows, j], power, alpha, "measured"))
    return out


def _model(spec: FleetSpec, w: WorkloadEntry, c: Configuration, levels: np.ndarray,
           attainment: np.ndarray, power_w: np.ndarray, alpha: float,
           source: str) -> ReplicaModel:  # fmt: skip
    """The replica model from loads (ascending), their attainment and the replica's power:
    capacity up to the first load that misses the target, ``P0 + k q`` fitted over the loads
    it carries, ``F`` and ``V`` at ``alpha`` (see the module docstring)."""
    ok = attainment >= w.attainment
    n_ok = len(ok) if ok.all() else int(np.argmin(ok))
    idle = sum(float(get_gpu(g).idle_power_w) for g in c.gpus)
    use = slice(0, max(n_ok, 1))
    p0, k = _fit(levels[use], power_w[use], idle)
    kwh = 3600.0 * spec.pue / J_PER_KWH
    return ReplicaModel(w.name, c,
                        float(levels[n_ok - 1]) if n_ok else 0.0,
                        p0 * kwh * alpha + embodied_g_per_h(spec, c.gpus), k * kwh * alpha,
                        p0, k, source)


def embodied_g_per_h(spec: FleetSpec, gpus: Sequence[str]) -> float:
    """Eq. 1 for one hour of ``gpus``, at the fleet file's lifetimes and embodied overrides
    (the first [[gpus]] entry of each type)."""
    out = 0.0
    for g in gpus:
        entry = next(e for e in spec.gpus if get_gpu(e.type).name == get_gpu(g).name)
        gpu = get_gpu(g)
        if entry.embodied_kg is not None:
            gpu = dataclasses.replace(gpu, embodied_kg=entry.embodied_kg, embodied_source="user")
        out += float(embodied_carbon_g(3600.0, gpu, entry.lifetime_years))
    return out


def _power_w(m: object, filled: dict[str, np.ndarray], rows: list[int], j: int) -> np.ndarray:
    """Average power (W) of configuration ``j``'s GPUs at each row: measured energy over the
    allocated time where observed, else the completed energy per token x tokens per second."""
    out = []
    for i in rows:
        seconds, energy = m.seconds[i, j], m.energy_j[i, j]  # type: ignore[attr-defined]
        if np.isfinite(energy).all() and (seconds > 0).any():
            out.append(float(sum(e / s for e, s in zip(energy, seconds, strict=True) if s > 0)))
        else:
            row = m.rows[i]  # type: ignore[attr-defined]
            tokens_per_s = row.qps * row.output_tokens
            out.append(float(filled["energy_kwh"][i, j]) * J_PER_KWH * tokens_per_s)
    return np.array(out)


def _fit(q: np.ndarray, p: np.ndarray, idle_w: float) -> tuple[float, float]:
    """``P(q) = P0 + k q`` by least squares, ``P0 >= idle_w`` and ``k >= 0``."""
    if len(q) >= 2 and np.ptp(q) > 0:
        k, p0 = np.polyfit(q, p, 1)
    else:
        p0, k = idle_w, (float(p[0]) - idle_w) / float(q[0]) if len(q) and q[0] > 0 else 0.0
    p0 = max(float(p0), idle_w)
    k = max(float(k), 0.0)
    return p0, k
