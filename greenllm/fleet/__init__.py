"""Fleet planning: what to run on the GPUs you have (docs/fleet.md).

The fleet file (:func:`load_fleet`: inventory, workloads, models), each candidate replica's
capacity and carbon (:func:`replica_models`), the carbon MILP over the inventory
(:func:`solve`, :func:`pareto`), the baselines beside it and the deployment it gives.
"""

from greenllm.fleet.baselines import fits, paper_rule, restricted, standalone_new
from greenllm.fleet.capacity import (
    LEVELS,
    ReplicaModel,
    candidate_configurations,
    embodied_g_per_h,
    replica_models,
    workload_application,
)
from greenllm.fleet.check import simulated_attainment
from greenllm.fleet.declare import declare, model_from_hf_config
from greenllm.fleet.deployment import (
    DEFAULT_PRICE_PER_HOUR,
    build_problem,
    deployment,
    newest_type,
)
from greenllm.fleet.optimize import (
    FleetProblem,
    FleetSolution,
    InfeasibleFleetError,
    pareto,
    solve,
)
from greenllm.fleet.report import FleetPlan, compare_fleet, plan_fleet
from greenllm.fleet.spec import (
    CustomModel,
    FleetSpec,
    GPUEntry,
    GPUSpecEntry,
    LinkEntry,
    ModelsEntry,
    WorkloadEntry,
    load_fleet,
    parse_fleet,
)

__all__ = [
    "DEFAULT_PRICE_PER_HOUR",
    "LEVELS",
    "CustomModel",
    "FleetPlan",
    "FleetProblem",
    "FleetSolution",
    "FleetSpec",
    "GPUEntry",
    "GPUSpecEntry",
    "InfeasibleFleetError",
    "LinkEntry",
    "ModelsEntry",
    "ReplicaModel",
    "WorkloadEntry",
    "build_problem",
    "candidate_configurations",
    "compare_fleet",
    "declare",
    "deployment",
    "embodied_g_per_h",
    "fits",
    "load_fleet",
    "model_from_hf_config",
    "newest_type",
    "paper_rule",
    "pareto",
    "parse_fleet",
    "plan_fleet",
    "replica_models",
    "restricted",
    "simulated_attainment",
    "solve",
    "standalone_new",
    "workload_application",
]
