"""The SLO-aware scheduler (Section 4.3): matrices, collaborative filtering, Algorithm 1, plans.

Imports numpy/scipy/pydantic only (scikit-surprise is imported lazily by its adapter).
"""

from greenllm.scheduler.algorithm import schedule
from greenllm.scheduler.completion import (
    CompletionResult,
    complete,
    complete_attainment,
    complete_carbon,
    complete_with_uncertainty,
)
from greenllm.scheduler.matrix import ProfileMatrices, RowKey, matrices_from_store
from greenllm.scheduler.planner import Plan, PlanEntry, Planner
from greenllm.scheduler.timeplan import HourlyPlan, plan_hourly

__all__ = [
    "CompletionResult",
    "HourlyPlan",
    "Plan",
    "PlanEntry",
    "Planner",
    "ProfileMatrices",
    "RowKey",
    "complete",
    "complete_attainment",
    "complete_carbon",
    "complete_with_uncertainty",
    "matrices_from_store",
    "plan_hourly",
    "schedule",
]
