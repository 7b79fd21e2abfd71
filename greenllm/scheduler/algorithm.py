"""Algorithm 1 of the paper (the SLO-aware scheduler), vectorised, plus an uncertainty margin.

Both matrices are ``(n_workloads, n_configs)``: a row is a workload (application x request
size x QPS), a column a configuration. NB the paper writes ``SLO_att[i, j]`` with ``i`` the
configuration; here rows are workloads. For each workload (Algorithm 1, lines 2-6)::

    Feasible = {config | SLO_att[w, config] >= SLO_target}
    if Feasible:  choose argmin_{config in Feasible} C[w, config]
    else:         priority "slo":     argmax_config SLO_att[w, config]
                  priority "default": the default configuration

Ties go to the lower carbon, then to the lower configuration index, so the answer is unique.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from greenllm.errors import ConfigError

if TYPE_CHECKING:
    from greenllm.scheduler.completion.complete import CompletionResult

__all__ = ["PRIORITIES", "Decision", "decide", "schedule", "schedule_with_margin"]

logger = logging.getLogger(__name__)

PRIORITIES = ("slo", "default")


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    i, j = np.argwhere(mask)[0]
    return int(i), int(j)


def _validate(
    carbon: object, slo_att: object, slo_target: float, priority: str, default: int
) -> tuple[np.ndarray, np.ndarray]:
    try:
        c = np.asarray(carbon, dtype=np.float64)
        a = np.asarray(slo_att, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError("carbon and slo_att must be 2-D numeric arrays") from err
    for name, x in (("carbon", c), ("slo_att", a)):
        if x.ndim != 2:
            raise ConfigError(f"{name} must be 2-D (n_workloads, n_configs); got shape {x.shape}")
    if c.shape != a.shape:
        raise ConfigError(f"carbon has shape {c.shape} but slo_att has shape {a.shape}")
    if c.shape[1] == 0:
        raise ConfigError("there are no configurations (0 columns); add at least one")
    for name, x in (("carbon", c), ("slo_att", a)):
        if not np.isfinite(x).all():
            i, j = _first_bad(~np.isfinite(x))
            raise ConfigError(
                f"{name}[{i}, {j}] = {x[i, j]} (workload row {i}, config column {j}): values "
                "must be finite; complete the matrix first (greenllm.scheduler.complete)"
            )
    if (c < 0).any():
        i, j = _first_bad(c < 0)
        raise ConfigError(f"carbon[{i}, {j}] = {c[i, j]} (row {i}, column {j}): must be >= 0")
    if ((a < 0) | (a > 1)).any():
        i, j = _first_bad((a < 0) | (a > 1))
        raise ConfigError(
            f"slo_att[{i}, {j}] = {a[i, j]} (row {i}, column {j}): attainment must be in [0, 1]"
        )
    if not isinstance(slo_target, (int, float, np.floating, np.integer)) or not (
        0.0 <= float(slo_target) <= 1.0
    ):
        raise ConfigError(f"slo_target = {slo_target!r}: must be a number in [0, 1], e.g. 0.9")
    if priority not in PRIORITIES:
        raise ConfigError(f"priority = {priority!r}: must be one of {list(PRIORITIES)}")
    if isinstance(default, bool) or not isinstance(default, (int, np.integer)):
        raise ConfigError(f"default = {default!r}: must be a configuration index (an int)")
    if not 0 <= int(default) < c.shape[1]:
        raise ConfigError(
            f"default = {default}: must be a configuration index in 0..{c.shape[1] - 1}"
        )
    return c, a


def schedule(
    carbon: object,
    slo_att: object,
    slo_target: float = 0.9,
    priority: str = "slo",
    default: int = 0,
) -> np.ndarray:
    """Algorithm 1: the configuration index chosen for each workload (row).

    ``carbon`` and ``slo_att`` are complete ``(n_workloads, n_configs)`` matrices (carbon >= 0,
    attainment in [0, 1]). Feasible means ``slo_att >= slo_target``; the feasible configuration
    of least carbon wins. Without a feasible one, ``priority="slo"`` takes the highest
    attainment, ``priority="default"`` takes ``default``. Ties: lower carbon, then lower index.
    """
    c, a = _validate(carbon, slo_att, slo_target, priority, default)
    feasible = a >= slo_target
    best = np.argmin(np.where(feasible, c, np.inf), axis=1)  # argmin: first index among ties
    if priority == "slo":
        top = a == a.max(axis=1, keepdims=True)
        fallback = np.argmin(np.where(top, c, np.inf), axis=1)
    else:
        fallback = np.full(c.shape[0], int(default))
    return np.where(feasible.any(axis=1), best, fallback).astype(np.intp)


@dataclass(frozen=True)
class Decision:
    """Per-workload outcome of :func:`schedule_with_margin`; every field has one entry per row.

    ``choice``: chosen configuration. ``fallback``: no configuration was (confidently) feasible.
    ``n_feasible``: feasible configurations after the margin; ``n_feasible_point``: before it
    (plain Algorithm 1 on the point estimates). ``changed_by_margin``: the choice differs from
    :func:`schedule`'s. ``chosen_att_measured`` / ``chosen_carbon_measured``: the chosen cell
    was measured (not filled). ``runner_up``: the next configuration in the same order (-1 if
    none) and ``runner_up_measured`` whether both of its cells were measured: a choice that
    beat a filled runner-up (or is itself filled) rests on the completion.
    """

    choice: np.ndarray
    fallback: np.ndarray
    n_feasible: np.ndarray
    n_feasible_point: np.ndarray
    changed_by_margin: np.ndarray
    chosen_att_measured: np.ndarray
    chosen_carbon_measured: np.ndarray
    runner_up: np.ndarray
    runner_up_measured: np.ndarray

    def summary(self) -> dict[str, int]:
        """Counts over workloads, e.g. for a report."""
        measured = self.chosen_att_measured & self.chosen_carbon_measured
        return {
            "workloads": int(self.choice.size),
            "fallback": int(self.fallback.sum()),
            "changed_by_margin": int(self.changed_by_margin.sum()),
            "chosen_measured": int(measured.sum()),
            "chosen_filled": int((~measured).sum()),
        }

    def records(self) -> list[dict[str, int | bool]]:
        """One plain dict per workload (JSON-ready)."""
        fields = self.__dataclass_fields__
        return [{k: getattr(self, k)[i].item() for k in fields} for i in range(self.choice.size)]


def _mask(x: object, shape: tuple[int, int], name: str) -> np.ndarray:
    m = np.asarray(x, dtype=bool)
    if m.shape != shape:
        raise ConfigError(f"{name} has shape {m.shape}; it must match the matrices' {shape}")
    return m


def schedule_with_margin(
    carbon: object,
    slo_att: object,
    observed_mask: object,
    att_stderr: object,
    slo_target: float = 0.9,
    margin_sigmas: float = 1.0,
    priority: str = "slo",
    default: int = 0,
    carbon_observed: object = None,
) -> Decision:
    """Algorithm 1 where a filled attainment must clear the target by its estimated error.

    A measured cell (``observed_mask`` True) is feasible when ``slo_att >= slo_target``, a
    filled one when ``slo_att - margin_sigmas * att_stderr >= slo_target``. When none is, the
    SLO fallback takes the configuration most likely to meet the target under a normal error
    model, i.e. the largest ``(slo_att - slo_target) / att_stderr`` (a measured cell below the
    target has no chance), then the highest attainment, lower carbon, lower index.
    ``margin_sigmas=0`` gives exactly :func:`schedule` (its fallback included).
    ``carbon_observed`` (default: ``observed_mask``) marks measured carbon cells for the report.
    """
    c, a = _validate(carbon, slo_att, slo_target, priority, default)
    shape = (int(c.shape[0]), int(c.shape[1]))
    observed = _mask(observed_mask, shape, "observed_mask")
    c_obs = (
        observed if carbon_observed is None else _mask(carbon_observed, shape, "carbon_observed")
    )
    err = np.asarray(att_stderr, dtype=np.float64)
    if err.shape != shape or not np.isfinite(err).all() or (err < 0).any():
        raise ConfigError(f"att_stderr must be finite, >= 0 and of shape {shape}")
    if not np.isfinite(margin_sigmas) or margin_sigmas < 0:
        raise ConfigError(f"margin_sigmas = {margin_sigmas}: must be >= 0 (e.g. 1.0)")
    lower = np.where(observed, a, a - margin_sigmas * err)
    feasible = lower >= slo_target
    # full orders per row: feasible first by carbon; fallback by lower bound desc, then carbon
    order = np.lexsort((c, ~feasible), axis=1)
    if margin_sigmas > 0:  # fallback: most likely to meet the target, then Algorithm 1's order
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            chance = np.where(observed | (err == 0), -np.inf, (a - slo_target) / err)
        fb_order = np.lexsort((c, -a, -chance), axis=1)
    else:
        fb_order = np.lexsort((c, -a), axis=1)
    n_feas = feasible.sum(axis=1)
    has = n_feas > 0
    second = np.full(shape[0], -1)
    if shape[1] > 1:
        second = np.where(has, np.where(n_feas >= 2, order[:, 1], -1), fb_order[:, 1])
    if priority == "slo":
        choice = np.where(has, order[:, 0], fb_order[:, 0])
        runner_up = second
    else:
        choice = np.where(has, order[:, 0], int(default))
        runner_up = np.where(has, second, -1)
    choice = choice.astype(np.intp)
    rows = np.arange(shape[0])
    safe = np.maximum(runner_up, 0)
    ru_measured = (runner_up >= 0) & observed[rows, safe] & c_obs[rows, safe]
    plain = schedule(c, a, slo_target, priority, default)
    return Decision(
        choice=choice,
        fallback=~has,
        n_feasible=n_feas,
        n_feasible_point=(a >= slo_target).sum(axis=1),
        changed_by_margin=choice != plain,
        chosen_att_measured=observed[rows, choice],
        chosen_carbon_measured=c_obs[rows, choice],
        runner_up=runner_up.astype(np.intp),
        runner_up_measured=ru_measured,
    )


def decide(
    carbon: CompletionResult,
    attainment: CompletionResult,
    slo_target: float = 0.9,
    margin_sigmas: float = 1.0,
    priority: str = "slo",
    default: int = 0,
) -> Decision:
    """:func:`schedule_with_margin` on two :class:`~greenllm.scheduler.CompletionResult`s."""
    return schedule_with_margin(
        carbon.values,
        attainment.values,
        attainment.observed_mask,
        attainment.stderr,
        slo_target=slo_target,
        margin_sigmas=margin_sigmas,
        priority=priority,
        default=default,
        carbon_observed=carbon.observed_mask,
    )
