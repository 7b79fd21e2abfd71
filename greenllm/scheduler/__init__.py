"""The SLO-aware scheduler (Section 4.3): matrices, collaborative filtering, Algorithm 1, plans.

Imports numpy/scipy/pydantic only (scikit-surprise is imported lazily by its adapter).
"""

from greenllm.scheduler.algorithm import (
    PRIORITIES,
    Decision,
    decide,
    schedule,
    schedule_with_margin,
)
from greenllm.scheduler.completion.als import ALSFactorization
from greenllm.scheduler.completion.base import BiasBaseline, ColumnMean, CompletionEstimator
from greenllm.scheduler.completion.complete import (
    METHODS,
    CompletionResult,
    complete,
    complete_attainment,
    complete_carbon,
    complete_with_uncertainty,
    select_rank,
)
from greenllm.scheduler.completion.sgd import SGDFactorization
from greenllm.scheduler.completion.softimpute import SoftImpute
from greenllm.scheduler.completion.surprise import SurpriseSVD, surprise_available
from greenllm.scheduler.matrix import ProfileMatrices, RowKey, matrices_from_store
from greenllm.scheduler.planner import Plan, PlanEntry, Planner, PlanTable
from greenllm.scheduler.timeplan import HourlyPlan, Hysteresis, plan_hourly

__all__ = [
    "METHODS",
    "PRIORITIES",
    "ALSFactorization",
    "BiasBaseline",
    "ColumnMean",
    "CompletionEstimator",
    "CompletionResult",
    "Decision",
    "HourlyPlan",
    "Hysteresis",
    "Plan",
    "PlanEntry",
    "PlanTable",
    "Planner",
    "ProfileMatrices",
    "RowKey",
    "SGDFactorization",
    "SoftImpute",
    "SurpriseSVD",
    "complete",
    "complete_attainment",
    "complete_carbon",
    "complete_with_uncertainty",
    "decide",
    "matrices_from_store",
    "plan_hourly",
    "schedule",
    "schedule_with_margin",
    "select_rank",
    "surprise_available",
]
