"""Running sweep cells on a Ray cluster: one task per cell, placed by GPU type.

Each cell becomes one Ray task running :func:`~greenllm.profiler.sweep.execute.measure`; the task
asks for the custom resources of :func:`ray_resources` (``{"gpu_type:T4": 1}`` for a
configuration that needs a T4), so Ray places it on a node started with, e.g.::

    ray start --address HEAD:6379 --resources '{"gpu_type:T4": 1, "gpu_type:A100": 1}'

Simulated backends need no GPU and ask for none. Results come back to the driver, which alone
writes the store. Ray is imported here only; without it: ``pip install 'greenllm[ray]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from greenllm.config import Configuration
from greenllm.errors import WorkerError, missing_extra
from greenllm.profiler.sweep.execute import CellJob, CellOutcome, measure

__all__ = [
    "LOOPBACK",
    "SIMULATED_BACKENDS",
    "import_ray",
    "init_local_ray",
    "ray_resources",
    "run_ray",
]

logger = logging.getLogger(__name__)

#: Backends that model GPUs instead of using them: their tasks need no GPU resource.
SIMULATED_BACKENDS = frozenset({"sim"})

#: The only address a local Ray started by a sweep listens on (GCS, raylet, workers, driver).
LOOPBACK = "127.0.0.1"
# Ray (2.x, Linux) resolves a node address of 127.0.0.1 to the host's outside address unless
# "clusters" are disabled (the default on macOS and Windows); then every process of the node,
# GCS included, binds to the loopback address.
_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

ResourceFn = Callable[[Configuration, str], dict[str, float]]


def ray_resources(
    configuration: Configuration, backend: str, *, simulated: bool | None = None
) -> dict[str, float]:
    """Custom Ray resources one cell's task needs: ``{"gpu_type:<GPU>": count}``.

    One unit per GPU of ``configuration`` (new GPU first; DPD A100+T4 asks for
    ``{"gpu_type:A100": 1, "gpu_type:T4": 1}``, so a disaggregated pair runs on a node that
    advertises both). ``{}`` for a simulated backend (``simulated`` defaults to
    ``backend in SIMULATED_BACKENDS``).
    """
    if simulated is None:
        simulated = backend in SIMULATED_BACKENDS
    if simulated:
        return {}
    return {f"gpu_type:{gpu}": float(n) for gpu, n in Counter(configuration.gpus).items()}


def import_ray() -> Any:
    """The ``ray`` module, or :class:`BackendUnavailableError` naming the ``ray`` extra."""
    try:
        import ray
    except ImportError as err:
        raise missing_extra("ray", "ray") from err
    return ray


def init_local_ray(ray: Any, **options: Any) -> Any:
    """Start a local, single-node Ray that listens on :data:`LOOPBACK` only; return its context.

    ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough on Linux: Ray replaces a
    loopback node address with the host's outside one and its GCS, raylet and workers listen on
    every interface. With multi-node clusters disabled for the start
    (``$RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the macOS/Windows default) the node keeps
    127.0.0.1. A node that still ends up on another address is shut down again
    (:class:`WorkerError`): start Ray yourself and pass its address.
    ``options`` go to ``ray.init`` (the dashboard is off unless given).
    """
    options = {"include_dashboard": False, "log_to_driver": False, **options}
    with _clusters_disabled(ray):
        context = ray.init(_node_ip_address=LOOPBACK, **options)
    node_ip = _node_ip(ray, context)
    if node_ip != LOOPBACK:
        ray.shutdown()
        raise WorkerError(
            f"the local Ray node started on {node_ip}, not {LOOPBACK}: refusing to run a sweep on "
            "a node reachable from the network; start a Ray cluster yourself (behind a "
            "firewall) and pass --ray-address"
        )
    logger.info("started a local Ray node on %s", node_ip)
    return context


@contextlib.contextmanager
def _clusters_disabled(ray: Any) -> Any:
    previous = os.environ.get(_CLUSTER_ENV)
    os.environ[_CLUSTER_ENV] = "0"
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    had = constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER")
    old = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if had:  # read once at import: set the loaded value too
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had:
            constants.ENABLE_RAY_CLUSTER = old
        if previous is None:
            os.environ.pop(_CLUSTER_ENV, None)
        else:
            os.environ[_CLUSTER_ENV] = previous


def _node_ip(ray: Any, context: Any) -> str | None:
    info = getattr(context, "address_info", None) or {}
    ip = info.get("node_ip_address") if isinstance(info, dict) else None
    if ip is None:
        with contextlib.suppress(Exception):
            ip = ray.util.get_node_ip_address()
    return ip


def _remote_measure(job: CellJob) -> CellOutcome:
    return measure(job)


def run_ray(
    jobs: Sequence[CellJob],
    *,
    address: str | None = None,
    resources: ResourceFn | None = None,
    num_cpus: float = 1.0,
) -> Iterator[CellOutcome]:
    """Outcomes of ``jobs`` run as Ray tasks, in completion order.

    Uses the Ray session already initialised, else ``ray.init(address)`` (``None``: the
    ``RAY_ADDRESS`` cluster, or else a new local one bound to 127.0.0.1, see
    :func:`init_local_ray`; ``"local"``: a new local one too), shut down again at the end. Closing
    the generator cancels the tasks still pending. A task that dies (worker crash, node lost) gives
    a ``failed`` outcome, retried on resume.
    """
    ray = import_ray()
    resources = resources or ray_resources
    started = False
    if not ray.is_initialized():
        if address == "local" or (address is None and not os.environ.get("RAY_ADDRESS")):
            init_local_ray(ray)  # a new node on this machine: loopback only
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    remote = ray.remote(_remote_measure)
    pending: dict[Any, CellJob] = {}
    try:
        for job in jobs:
            opts: dict[str, Any] = {"num_cpus": num_cpus}
            need = resources(job.cell.configuration, job.backend)
            if need:
                opts["resources"] = need
            pending[remote.options(**opts).remote(job)] = job
        logger.info("submitted %d cells to Ray", len(pending))
        while pending:
            refs = list(pending)
            ready, _ = ray.wait(refs, num_returns=1)
            more, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in dict.fromkeys([*ready, *more]):
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:
                    outcome = CellOutcome(job.cell_id, "failed", message=f"Ray task failed: {err}")
                yield outcome
    finally:
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception as err:  # best effort: the sweep's own outcome matters more
                logger.debug("cancelling a Ray task failed: %s", err)
        if started:
            ray.shutdown()
