"""What is served: the paper's applications (Table 2), real traces, HumanEval prompts, arrivals.

>>> from greenllm.workloads import workload, load_trace
>>> w = workload("ShareGPT", qps=2.0, size="p50")       # fixed (160, 140), SLO 200 ms / 80 ms
>>> reqs = load_trace("conversation", qps=2.0, n=100)   # real arrivals, rescaled to 2 QPS

Names are imported lazily, so importing this package does not parse any trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "Application": "greenllm.workloads.apps",
    "APPLICATIONS": "greenllm.workloads.apps",
    "get_application": "greenllm.workloads.apps",
    "list_applications": "greenllm.workloads.apps",
    "paper_qps_range": "greenllm.workloads.apps",
    "register_application": "greenllm.workloads.apps",
    "workload": "greenllm.workloads.apps",
    "RequestSet": "greenllm.workloads.requests",
    "poisson_arrivals_s": "greenllm.workloads.requests",
    "TRACES": "greenllm.workloads.traces",
    "TraceSpec": "greenllm.workloads.traces",
    "TraceStats": "greenllm.workloads.traces",
    "list_traces": "greenllm.workloads.traces",
    "load_trace": "greenllm.workloads.traces",
    "trace_stats": "greenllm.workloads.traces",
    "approx_token_count": "greenllm.workloads.humaneval",
    "humaneval_prompts": "greenllm.workloads.humaneval",
    "humaneval_requests": "greenllm.workloads.humaneval",
}

__all__ = list(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:  # pragma: no cover
    from greenllm.workloads.apps import (  # noqa: F401
        APPLICATIONS,
        Application,
        get_application,
        list_applications,
        paper_qps_range,
        register_application,
        workload,
    )
    from greenllm.workloads.humaneval import (  # noqa: F401
        approx_token_count,
        humaneval_prompts,
        humaneval_requests,
    )
    from greenllm.workloads.requests import RequestSet, poisson_arrivals_s  # noqa: F401
    from greenllm.workloads.traces import (  # noqa: F401
        TRACES,
        TraceSpec,
        TraceStats,
        list_traces,
        load_trace,
        trace_stats,
    )
